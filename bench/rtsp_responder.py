"""A minimal RTSP responder for the probe benchmark: OPTIONS and DESCRIBE, nothing else.

    python bench/rtsp_responder.py --ports 32

Listens on that many loopback ports (any path), prints `PORTS p1 p2 …`, and exits when stdin
closes. An `asyncio.Protocol` rather than streams, so that one process answers far more
probes per second than a client needs, and the benchmark measures the client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=framesize:96 640-360\r\n"
    b"a=control:trackID=0\r\n"
)


class Rtsp(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            method = lines[0].split(b" ", 1)[0]
            cseq = b"0"
            for line in lines[1:]:
                if line[:5].lower() == b"cseq:":
                    cseq = line[5:].strip()
            if method == b"DESCRIBE":
                out = (
                    b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\nContent-Type: application/sdp"
                    b"\r\nContent-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
                )
            elif method == b"OPTIONS":
                out = b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n"
            else:
                out = b"RTSP/1.0 405 Method Not Allowed\r\nCSeq: " + cseq + b"\r\n\r\n"
            assert self.transport is not None
            self.transport.write(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=32)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(Rtsp, "127.0.0.1", 0, backlog=1024) for _ in range(args.ports)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("PORTS", *ports, flush=True)
    # Exit when the parent goes away (stdin closes).
    await loop.run_in_executor(None, sys.stdin.buffer.read)


if __name__ == "__main__":
    asyncio.run(main())
