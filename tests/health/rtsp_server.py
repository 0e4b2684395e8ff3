#!/usr/bin/python3
"""A real RTSP server with one mount per camera fault, for the frame-sampling tests.

Runs under the SYSTEM Python (`/usr/bin/python3`), because GStreamer's RTSP server is only
reachable through PyGObject (`python3-gi`, `gir1.2-gst-rtsp-server-1.0`), which the project venv
does not have; so this file imports nothing from the project. The tests sample these streams
through OpenCV/FFmpeg exactly as a production worker samples a camera, which is the only way to
learn what the diagnosis sees after real H.264 encoding, RTP packetisation and decoding.

Every factory is *non-shared*: each client gets its own pipeline, so `/frozen` and `/stopping`
start from the beginning for every test, and Debian's 1.22 server does not crash under the quick
connect/disconnect cycles of the tests (it does with shared media).

Benchmarks add `--cam-file FILE`: the extra `/cam/<i>` mounts then serve a pre-encoded H.264
Matroska file (made once with `--encode-only FILE`, the same moving picture as `/normal`) without
re-encoding, so the server's CPU is not charged to the client being measured.

`--ptz-dir DIR` adds `/ptz-0` … `/ptz-3`: a view onto a scene twice as wide, panned to the
position written in `DIR/ptz-<i>` (ONVIF generic pan; the fake ONVIF device's RelativeMove
writes it), read when a client's pipeline is built, so a move shows from the next session on.

Usage: rtsp_server.py [--port N] [--password PW] [--size WxH] [--extra-mounts N]
                      [--cam-file FILE] [--ptz-dir DIR] [--watch-stdin]
       rtsp_server.py --encode-only FILE [--size WxH] [--seconds S]
The first stdout line is `PORT <n>` once the server listens (useful with --port 0).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from collections.abc import Callable

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

WIDTH, HEIGHT, FPS = 320, 180, 15
# A slow sub-stream (some cameras send 1–5 fps): 2 s of it hold only 6–7 frames.
SLOW_FPS = 3
STOP_AFTER_MS = 2000
# The `/ptz-<i>` mounts: one unit of ONVIF's generic pan (half a turn) spans this many views.
PTZ_VIEWS_PER_UNIT = 4
PTZ_MOUNTS = 4


def pipelines(width: int = WIDTH, height: int = HEIGHT) -> dict[str, str]:
    """One launch line per mount, at the given picture size (the tests use 320×180)."""
    caps = f"video/x-raw,width={width},height={height},framerate={FPS}/1"
    slow_caps = f"video/x-raw,width={width},height={height},framerate={SLOW_FPS}/1"

    def encoder(fps: int, rate: str = "bitrate=1500") -> str:
        # Low latency and a keyframe every second, so a client joining at any moment decodes
        # at once.
        return (
            "videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} {rate} ! "
            "rtph264pay name=pay0 pt=96 config-interval=1"
        )

    encode = encoder(FPS)
    # The slow mounts encode at a constant quantiser: at 3 fps x264's bit-rate control changed
    # the picture at its first scheduled keyframe (mean grey 127 → 149 for one frame), which
    # broke a frozen run of only 12 frames; a 15 fps sample spreads over more frames than that.
    steady = encoder(SLOW_FPS, "pass=quant quantizer=20")
    # SMPTE bars scrolling sideways: textured, colourful but without one dominant hue, and
    # moving enough that consecutive frames differ (a static picture would rightly be called
    # frozen).
    moving = f"videotestsrc is-live=true pattern=smpte horizontal-speed=6 ! {caps}"
    return {
        "/normal": f"( {moving} ! {encode} )",
        "/black": f"( videotestsrc is-live=true pattern=black ! {caps} ! {encode} )",
        # One picture repeated for ever: what a hung encoder keeps sending.
        "/frozen": (
            f"( videotestsrc pattern=smpte num-buffers=1 ! {caps} ! imagefreeze is-live=true ! "
            f"{encode} )"
        ),
        # `/frozen` and `/normal` at SLOW_FPS (a camera's slow sub-stream): 2 s hold too few
        # frames for a frozen run, so the sampler must read on.
        "/frozen-slow": (
            f"( videotestsrc pattern=smpte num-buffers=1 ! {slow_caps} ! "
            f"imagefreeze is-live=true ! {slow_caps} ! {steady} )"
        ),
        "/normal-slow": (
            f"( videotestsrc is-live=true pattern=smpte horizontal-speed=6 ! {slow_caps} ! "
            f"{steady} )"
        ),
        "/snow": f"( videotestsrc is-live=true pattern=snow ! {caps} ! {encode} )",
        # Down to 1/8 and back up: all detail lost, as through a defocused or fogged lens.
        "/blurred": (
            f"( {moving} ! videoscale ! video/x-raw,width={width // 8},height={height // 8} ! "
            f"videoscale ! video/x-raw,width={width},height={height} ! {encode} )"
        ),
        # The grey picture half-blended with red: every lit pixel ends up red and saturated, as
        # behind a failed IR-cut filter.
        "/colour-cast": (
            f"( compositor name=mix sink_1::alpha=0.5 ! {encode} "
            f"{moving} ! videobalance saturation=0 ! videoconvert ! mix.sink_0 "
            "videotestsrc is-live=true pattern=solid-color foreground-color=0xffd02020 ! "
            f"{caps} ! videoconvert ! mix.sink_1 )"
        ),
        # The left half covered with black, as by an object over the lens.
        "/occluded": (
            f"( compositor name=mix ! {encode} "
            f"{moving} ! videoconvert ! mix.sink_0 "
            f"videotestsrc is-live=true pattern=black ! video/x-raw,width={width // 2},"
            f"height={height},framerate={FPS}/1 ! videoconvert ! mix.sink_1 )"
        ),
        # Frames flow, then a valve (closed by a timer, see `_stop_later`) drops them all while
        # the RTSP session stays up: a stalled camera, not one that hangs up.
        "/stopping": f"( {moving} ! valve name=gate drop=false ! {encode} )",
        "/auth": f"( {moving} ! {encode} )",
        **scene_mounts(width, height, encode),
        # RTP over UDP only: a SETUP asking for TCP interleaved transport is refused (461), as
        # by devices that never implemented it, so a client must fall back to its default
        # transport.
        "/udp-only": f"( {moving} ! {encode} )",
        **ptz_mounts(width, height, encode),
    }


def ptz_mounts(width: int, height: int, encode: str) -> dict[str, str]:
    """`/ptz-<i>`: still SMPTE bars twice the view's width, seen through a view-sized window
    (`pan`'s output caps) whose position `_pan` sets; a ball sweeping over the view keeps the
    picture live (a still one is rightly called frozen, and then a move is not judged)."""
    caps = f"video/x-raw,width={width},height={height},framerate={FPS}/1"
    wide = f"video/x-raw,width={width * 2},height={height},framerate={FPS}/1"
    ball = (
        "videotestsrc is-live=true pattern=ball motion=sweep background-color=0x00000000 "
        f"foreground-color=0xffe0e020 ! video/x-raw,format=BGRA,width={width},height={height},"
        f"framerate={FPS}/1"
    )
    launch = (
        f"( compositor name=pan ! videoconvert ! {caps} ! {encode} "
        f"videotestsrc is-live=true pattern=smpte ! {wide} ! videoconvert ! pan.sink_0 "
        f"{ball} ! pan.sink_1 )"
    )
    return {f"/ptz-{i}": launch for i in range(PTZ_MOUNTS)}


def scene_mounts(width: int, height: int, encode: str) -> dict[str, str]:
    """`/scene` — a fixed camera: SMPTE bars as the street, a ball as the traffic — and one
    mount per item of the VQD check list, each the scene with one fault, for the tests that
    diagnose against a reference picture of `/scene` (test_vqd_streams.py).

    `/scene-shake` moves the view by a few pixels at random every frame (a timer on the
    compositor's pad, see `_shake`); `/scene-turned` is another view (a different pattern),
    as after the camera was knocked round.
    """
    caps = f"video/x-raw,width={width},height={height},framerate={FPS}/1"
    big = f"video/x-raw,width={width + 32},height={height + 32},framerate={FPS}/1"
    ball = (
        "videotestsrc is-live=true pattern=ball motion=sweep background-color=0x00000000 "
        f"foreground-color=0xffe0e020 ! video/x-raw,format=BGRA,width={width},height={height},"
        f"framerate={FPS}/1"
    )

    def scene(then: str, pattern: str = "smpte", out: str = caps) -> str:
        """The scene's branch, its output linked into `then` (an element or a pad)."""
        return (
            f"compositor name=scene ! videoconvert ! {out} ! {then} "
            f"videotestsrc is-live=true pattern={pattern} ! {out} ! videoconvert ! scene.sink_0 "
            f"{ball} ! scene.sink_1"
        )

    def veil(alpha: float, source: str) -> str:
        """The scene with `source` blended over it at `alpha`."""
        return (
            f"( compositor name=mix sink_1::alpha={alpha} ! videoconvert ! {caps} ! {encode} "
            f"{scene('mix.sink_0')} {source} ! videoconvert ! mix.sink_1 )"
        )

    def filtered(chain: str) -> str:
        return f"( {scene(chain + ' ! ' + encode)} )"

    solid = "videotestsrc is-live=true pattern=solid-color foreground-color="
    return {
        "/scene": filtered("identity"),
        "/scene-blue": f"( {solid}0xff1e32c8 ! {caps} ! {encode} )",
        "/scene-dark": filtered("videobalance brightness=-0.42 contrast=0.5"),
        "/scene-bright": filtered("videobalance brightness=0.75 contrast=0.6"),
        # A red veil over everything, as behind a failed IR-cut filter or a dead channel.
        "/scene-cast": veil(0.4, f"{solid}0xffd02020 ! {caps}"),
        "/scene-blur": filtered(
            f"videoscale ! video/x-raw,width={width // 8},height={height // 8} ! videoscale ! "
            f"{caps}"
        ),
        "/scene-snow": veil(0.45, f"videotestsrc is-live=true pattern=snow ! {caps}"),
        "/scene-stripes": veil(
            0.3, f"videotestsrc is-live=true pattern=zone-plate ky=40 kt=6 ! {caps}"
        ),
        "/scene-occluded": (
            f"( compositor name=mix ! videoconvert ! {caps} ! {encode} {scene('mix.sink_0')} "
            f"{solid}0xff203020 ! video/x-raw,width={width * 2 // 5},height={height},"
            f"framerate={FPS}/1 ! videoconvert ! mix.sink_1 )"
        ),
        "/scene-turned": f"( {scene(encode, pattern='spokes')} )",
        "/scene-shake": (
            f"( compositor name=shake ! videoconvert ! {caps} ! {encode} "
            f"{scene('shake.sink_0', out=big)} )"
        ),
    }


def encode_file(path: str, width: int, height: int, seconds: int) -> None:
    """Write `seconds` of the `/normal` picture to `path` as H.264 in Matroska, once.

    Same source and encoder settings as the live mounts (a keyframe every second, no B-frames),
    but a slower preset: this runs once, not for every client.
    """
    caps = f"video/x-raw,width={width},height={height},framerate={FPS}/1"
    pipeline = Gst.parse_launch(
        f"videotestsrc pattern=smpte horizontal-speed=6 num-buffers={seconds * FPS} ! {caps} ! "
        "videoconvert ! video/x-raw,format=I420 ! "
        f"x264enc tune=zerolatency speed-preset=medium key-int-max={FPS} bitrate=1500 ! "
        "h264parse ! matroskamux ! filesink name=out"
    )
    pipeline.get_by_name("out").set_property("location", path)
    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    msg = bus.timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        detail = msg.parse_error()[0].message if msg is not None else "timed out"
        sys.exit(f"encoding {path} failed: {detail}")


def file_pipeline(path: str) -> str:
    """Launch line serving a pre-encoded H.264 Matroska file as is: demux, parse, packetise.

    Each (non-shared) client gets its own pipeline from the start of the file, so the file only
    needs to be longer than the longest read; the RTSP server's sinks pace it at frame rate.
    """
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! matroskademux ! h264parse ! '
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _stop_later(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    """Close the valve of this client's `/stopping` pipeline a fixed time after it is built."""
    gate = media.get_element().get_by_name("gate")

    def close() -> bool:
        gate.set_property("drop", True)
        return False

    GLib.timeout_add(STOP_AFTER_MS, close)


def _shake(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    """Move this client's `/scene-shake` picture by up to ±8 px at random every frame, as a
    camera on a loose bracket in the wind."""
    mix = media.get_element().get_by_name("shake")
    pad = mix.get_static_pad("sink_0")
    rng = random.Random(7)

    def jiggle() -> bool:
        if pad is None:
            return False
        pad.set_property("xpos", rng.randint(-24, -8))
        pad.set_property("ypos", rng.randint(-24, -8))
        return True

    GLib.timeout_add(1000 // FPS, jiggle)


def _pan(ptz_dir: str, name: str, width: int) -> Callable[..., None]:
    """media-configure handler of `/ptz-<i>`: place this client's window at the pan position
    in `ptz_dir/<name>` (0 when the file is missing: the centre of the wide scene)."""

    def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        try:
            with open(os.path.join(ptz_dir, name)) as f:
                position = float(f.read().strip() or 0)
        except (OSError, ValueError):
            position = 0.0
        offset = round(width / 2 + position * PTZ_VIEWS_PER_UNIT * width)
        pad = media.get_element().get_by_name("pan").get_static_pad("sink_0")
        pad.set_property("xpos", -max(0, min(width, offset)))

    return configure


def build(
    port: int,
    password: str,
    width: int = WIDTH,
    height: int = HEIGHT,
    extra: int = 0,
    cam_file: str | None = None,
    ptz_dir: str | None = None,
) -> GstRtspServer.RTSPServer:
    """The server with all mounts; anonymous clients may use everything except `/auth`.

    `extra` adds `/cam/0` … `/cam/<extra-1>`, moving pictures like `/normal`, so benchmarks
    can address many distinct endpoints: encoded live, or served from `cam_file` as is.
    """
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))

    auth = GstRtspServer.RTSPAuth()
    anonymous = GstRtspServer.RTSPToken()
    anonymous.set_string("media.factory.role", "anonymous")
    auth.set_default_token(anonymous)
    admin = GstRtspServer.RTSPToken()
    admin.set_string("media.factory.role", "admin")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic("admin", password), admin)
    server.set_auth(auth)

    mounts = server.get_mount_points()
    launches = pipelines(width, height)
    for i in range(extra):
        launches[f"/cam/{i}"] = launches["/normal"] if cam_file is None else file_pipeline(cam_file)
    if ptz_dir is None:
        launches = {k: v for k, v in launches.items() if not k.startswith("/ptz-")}
    for path, launch in launches.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        # Anonymous clients may *see* `/auth` (without access the server answers 404, hiding
        # it) but not construct it, which is what makes the server answer 401 with a challenge.
        permissions = GstRtspServer.RTSPPermissions()
        for role in ("admin", "anonymous"):
            permissions.add_permission_for_role(role, "media.factory.access", True)
            construct = role == "admin" or path != "/auth"
            permissions.add_permission_for_role(role, "media.factory.construct", construct)
        factory.set_permissions(permissions)
        if path == "/stopping":
            factory.connect("media-configure", _stop_later)
        if path == "/scene-shake":
            factory.connect("media-configure", _shake)
        if path.startswith("/ptz-") and ptz_dir is not None:
            factory.connect("media-configure", _pan(ptz_dir, path[1:], width))
        if path == "/udp-only":
            factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
        mounts.add_factory(path, factory)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--password", default="secret", help="password of user admin on /auth")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="picture size WxH")
    parser.add_argument("--extra-mounts", type=int, default=0, help="add /cam/0 … /cam/N-1")
    parser.add_argument("--cam-file", help="serve /cam/<i> from this H.264 Matroska file")
    parser.add_argument("--ptz-dir", help="serve /ptz-<i>, panned as DIR/ptz-<i> says")
    parser.add_argument("--encode-only", metavar="FILE", help="write the /normal picture, exit")
    parser.add_argument("--seconds", type=int, default=30, help="length for --encode-only")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin closes (parent died)"
    )
    args = parser.parse_args()

    Gst.init(None)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.encode_only:
        encode_file(args.encode_only, width, height, args.seconds)
        return
    server = build(
        args.port, args.password, width, height, args.extra_mounts, args.cam_file, args.ptz_dir
    )
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print(f"PORT {server.get_bound_port()}", flush=True)

    def quit_loop(*_args: object) -> bool:
        loop.quit()
        return False

    if args.watch_stdin:
        # A test run that is killed cannot kill us; our stdin pipe closing tells us instead.
        GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_loop)
    loop.run()


if __name__ == "__main__":
    main()
