"""Every item of the VQD check list on a real stream: GStreamer encodes the fault with x264, it
travels as RTP over RTSP, the sampler decodes it with FFmpeg in a worker process, exactly as a
camera is diagnosed, against a reference picture of the clean scene (`/scene`, a fixed view:
SMPTE bars with a ball moving over them; see rtsp_server.scene_mounts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from numpy.typing import NDArray

from health.diagnosis import DEFAULT_FAULTS, REFERENCE_SIZE
from health.frames import FrameSampler

ITEMS = {
    "scene-blue": "signal_loss",  # the blue "no video" screen of an encoder without input
    "black": "signal_loss",
    "frozen": "frozen",
    "scene-dark": "too_dark",
    "scene-bright": "too_bright",
    "scene-cast": "colour_cast",
    "scene-blur": "blur",
    "scene-snow": "noise",
    "scene-stripes": "stripes",
    "scene-shake": "shake",
    "scene-occluded": "occlusion",
    "scene-turned": "scene_change",
}


@pytest.fixture(scope="module")
async def sampler() -> AsyncIterator[FrameSampler]:
    async with FrameSampler(processes=2) as s:
        yield s


@pytest.fixture(scope="module")
async def reference(sampler: FrameSampler, rtsp_server: str) -> NDArray[np.uint8]:
    """What a technician accepts at installation: the clean scene's picture."""
    result, diagnosis = await sampler.diagnose_stream(f"{rtsp_server}/scene", seconds=2.0)
    assert result.error is None, result.error
    assert diagnosis.picture is not None
    assert diagnosis.picture.shape == (REFERENCE_SIZE[1], REFERENCE_SIZE[0], 3)
    return diagnosis.picture


def _values(diagnosis: object) -> dict[str, float]:
    flags = getattr(diagnosis, "flags", {})
    return {name: round(flag.value, 2) for name, flag in flags.items()}


async def test_the_clean_scene_stays_clean_against_its_reference(
    sampler: FrameSampler, rtsp_server: str, reference: NDArray[np.uint8]
) -> None:
    result, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/scene", seconds=2.0, reference=reference, keep_frames=False
    )
    assert result.error is None, result.error
    assert diagnosis.fired == (), _values(diagnosis)
    assert not diagnosis.faulty


@pytest.mark.parametrize(("mount", "item"), ITEMS.items())
async def test_each_fault_on_a_real_stream_fires_its_item(
    sampler: FrameSampler, rtsp_server: str, reference: NDArray[np.uint8], mount: str, item: str
) -> None:
    result, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/{mount}", seconds=2.0, reference=reference, keep_frames=False
    )
    values = _values(diagnosis)
    print(f"{mount}: fired={diagnosis.fired} values={values}")
    assert result.error is None, result.error
    assert item in diagnosis.fired, values
    flag = diagnosis.flags[item]
    assert flag.fault == (item in DEFAULT_FAULTS) and diagnosis.faulty == bool(diagnosis.faults)
    # The cause is named, not buried under its symptoms: at most one other item fires.
    assert len(diagnosis.fired) <= 2, values


async def test_a_stream_without_a_reference_judges_no_scene_change(
    sampler: FrameSampler, rtsp_server: str
) -> None:
    _, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/scene-turned", seconds=1.5, keep_frames=False
    )
    assert not diagnosis.flags["scene_change"].fired
    assert diagnosis.flags["scene_change"].value != diagnosis.flags["scene_change"].value  # NaN
