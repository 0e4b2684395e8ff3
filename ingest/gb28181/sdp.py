"""The SDP GB/T 28181 live video uses (§9.2, Appendix F): `s=Play`, `y=` SSRC, PS over RTP."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.gb28181.errors import Gb28181Error


def play_ssrc(domain: str, serial: int, *, playback: bool = False) -> str:
    """GB/T 28181 SSRC: 0 live / 1 playback, digits 4–8 of the domain, a 4-digit serial."""
    return f"{1 if playback else 0}{domain[3:8]}{serial % 10_000:04d}"


def play_offer(
    *,
    channel_id: str,
    media_ip: str,
    media_port: int,
    ssrc: str,
    tcp: str | None = None,
) -> bytes:
    """The INVITE body asking `channel_id` to send PS over RTP to the media server.

    `tcp` is None for RTP over UDP, "passive" (the device connects to the media server) or
    "active" (the media server connects to the device), per GB/T 28181-2016 Appendix F.
    """
    proto = "TCP/RTP/AVP" if tcp else "RTP/AVP"
    lines = [
        "v=0",
        f"o={channel_id} 0 0 IN IP4 {media_ip}",
        "s=Play",
        f"c=IN IP4 {media_ip}",
        "t=0 0",
        f"m=video {media_port} {proto} 96 97 98",
        "a=recvonly",
        "a=rtpmap:96 PS/90000",
        "a=rtpmap:97 MPEG4/90000",
        "a=rtpmap:98 H264/90000",
    ]
    if tcp:
        lines += [f"a=setup:{tcp}", "a=connection:new"]
    lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class SdpAnswer:
    media_ip: str
    media_port: int
    ssrc: str
    proto: str


def parse_answer(body: bytes) -> SdpAnswer:
    """The device's answer: where it sends from and the SSRC it will use."""
    ip = ""
    port = 0
    ssrc = ""
    proto = ""
    for raw in body.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("c=IN IP4 ") or line.startswith("c=IN IP6 "):
            ip = line[9:].split("/")[0].strip()
        elif line.startswith("m=video "):
            bits = line.split()
            if len(bits) >= 3 and bits[1].isdigit():
                port = int(bits[1])
                proto = bits[2]
        elif line.startswith("y="):
            ssrc = line[2:].strip()
    if not ip or not port:
        raise Gb28181Error("SDP answer has no video connection address or port")
    return SdpAnswer(ip, port, ssrc, proto)
