"""Errors of the health package.

A probe that reaches a broken camera is not an error: `probe_rtsp` reports that as a
`ProbeResult` with a `failure` kind, because a dead camera is the expected, common answer of a
health check and the scheduler must record it, not crash on it. Exceptions here are for
callers handing us something we cannot work with (a URI that is not RTSP, frames that are not
images), which is a bug or a bad registry row to fix, not a camera state to record.
"""

from __future__ import annotations


class HealthError(Exception):
    """Base of everything the health package raises on purpose."""


class InvalidProbeTarget(HealthError, ValueError):
    """The stream URI cannot be probed at all (wrong scheme, no host, bad port).

    Also a `ValueError` so generic input validation that catches that keeps working.
    """


class InvalidFrames(HealthError, ValueError):
    """Frames handed to the diagnosis are not 8-bit BGR or grey images."""


class InvalidThresholds(HealthError, ValueError):
    """Diagnosis thresholds that cannot work (e.g. a frozen run shorter than two frames)."""


class InvalidPolicy(HealthError, ValueError):
    """A status policy that cannot work (a streak of zero probes, a flap share outside (0, 1])."""


class InvalidHistory(HealthError, ValueError):
    """A probe or transition history that contradicts itself (time running backwards, a
    transition leaving a status the camera was not in, an unknown status or outcome)."""


class InvalidKpiInput(HealthError, ValueError):
    """KPI inputs that do not describe one camera per row (length mismatch, unknown status,
    region codes shorter than the requested prefix, impossible online seconds)."""


class DiagnosisUnavailable(HealthError):
    """Frame diagnosis was asked for where no capture processes run (health off, or a probe-only
    worker); the message says how to turn it on."""


class MediaUnavailable(HealthError):
    """A channel's video could not be brought to the media server for frame diagnosis (the
    device refused or did not answer the INVITE, the media server failed); the message says
    which. Recorded as a failed diagnosis, like a stream that cannot be opened."""


class MediaBusy(MediaUnavailable):
    """The channel's device already streams as many channels as it may (its session cap):
    the diagnosis waits for a later turn instead of adding a session."""


class PtzUnavailable(HealthError):
    """A 云台失控 check could not move the camera: not known as a PTZ camera, no ONVIF address
    or credentials, or the device refused or did not answer the move. The check is then not
    judged (the picture said nothing about the head); the message says which, without
    credentials."""
