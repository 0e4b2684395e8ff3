"""A retransmitted request is answered from the response cache, read from its bytes before any
parsing, and never handled twice (RFC 3261 §17.2.2); a new transaction is handled anew."""

from __future__ import annotations

import asyncio
import socket

from ingest.gb28181.server import SipServer
from ingest.gb28181.transport import Peer, ResponseCache
from tests.ingest.gb28181.peers import DOMAIN, SERVER_ID

STRANGER = "34020000001320009998"


def message(branch: str, cseq: int, *, compact: bool = False) -> bytes:
    via, call_id = ("v", "i") if compact else ("Via", "Call-ID")
    body = b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>"
    head = (
        f"MESSAGE sip:{SERVER_ID}@{DOMAIN} SIP/2.0\r\n"
        f"{via}: SIP/2.0/UDP 127.0.0.1:5999;rport;branch={branch}\r\n"
        f"From: <sip:{STRANGER}@{DOMAIN}>;tag=t1\r\n"
        f"To: <sip:{SERVER_ID}@{DOMAIN}>\r\n"
        f"{call_id}: retrans-1@127.0.0.1\r\n"
        f"CSeq: {cseq} MESSAGE\r\n"
        "Content-Type: Application/MANSCDP+xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(sock: socket.socket, data: bytes, port: int) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, ("127.0.0.1", port))
    async with asyncio.timeout(5):
        return await loop.sock_recv(sock, 65535)


async def test_retransmission_gets_the_same_answer_and_no_second_handling(
    server: SipServer,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        first = await exchange(sock, message("z9hG4bK-r1", 1), server.port)
        again = await exchange(sock, message("z9hG4bK-r1", 1), server.port)
        compact = await exchange(sock, message("z9hG4bK-r1", 1, compact=True), server.port)
        other = await exchange(sock, message("z9hG4bK-r2", 2), server.port)
    assert first.startswith(b"SIP/2.0 403")
    assert again == first and compact == first  # the same bytes, tag included
    assert other.startswith(b"SIP/2.0 403") and other != first
    m = server.metrics()
    assert m["not_registered"] == 2  # handled once per transaction
    assert m["retransmissions_absorbed"] == 2


def test_raw_key_is_the_transaction_and_skips_responses_and_acks() -> None:
    peer = Peer("UDP", "127.0.0.1", 5999)
    key = ResponseCache.raw_key(message("z9hG4bK-r1", 1), peer)
    assert key == (b"z9hG4bK-r1", b"retrans-1@127.0.0.1", b"1 MESSAGE", peer)
    assert ResponseCache.raw_key(message("z9hG4bK-r1", 1, compact=True), peer) == key
    assert ResponseCache.raw_key(message("z9hG4bK-r1", 2), peer) != key
    assert ResponseCache.raw_key(message("z9hG4bK-r1", 1), Peer("UDP", "127.0.0.2", 5999)) != key
    ack = message("z9hG4bK-r1", 1).replace(b"MESSAGE sip", b"ACK sip", 1)
    assert ResponseCache.raw_key(ack, peer) is None
    assert (
        ResponseCache.raw_key(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=b\r\n\r\n", peer)
        is None
    )
    no_branch = message("z9hG4bK-r1", 1).replace(b";branch=z9hG4bK-r1", b"")
    assert ResponseCache.raw_key(no_branch, peer) is None
