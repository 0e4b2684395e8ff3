"""Frame diagnosis of channels that have no stream URI of their own (GB/T 28181).

Such a channel streams only when asked (SIP INVITE) and only to the media server, so the
health worker cannot open it like an RTSP camera. The composition (`api`, which alone may
import both the SIP stack and health) hands the worker a `MediaOpener`: given a camera, it
brings the channel's video to the media server and yields the URL of the server's output
for the sampler to read, and hangs up when the block ends. Health never learns SIP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

# camera id → a context yielding the media server's output URL (RTSP/FLV) while the channel
# streams there; raises `health.errors.MediaBusy` (session cap reached: try later) or
# `MediaUnavailable` (refused, no answer, media server failure).
MediaOpener = Callable[[uuid.UUID], AbstractAsyncContextManager[str]]
