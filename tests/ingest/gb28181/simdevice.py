"""A small GB/T 28181 device of our own over UDP, for what SIPp scenarios express badly:
many source ports, exact Expires values, a REGISTER storm. It speaks through the same message
and digest modules as the server, but from the client's side of RFC 3261.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from dataclasses import dataclass

from ingest.gb28181 import manscdp
from ingest.gb28181.digest import authorization_for
from ingest.gb28181.errors import SipParseError
from ingest.gb28181.message import (
    Headers,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from tests.ingest.gb28181.peers import DOMAIN, PASSWORD, SERVER_ID


class _Proto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue(maxsize=1000)
        self.catalog: bytes | None = None  # Response items to answer Query Catalog with
        self.device: SimDevice | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        # A test peer ignores what it cannot read, and drops what it has no room for.
        with contextlib.suppress(SipParseError, asyncio.QueueFull):
            msg = parse_message(data)
            if isinstance(msg, SipRequest) and self.device is not None and self.catalog:
                self.device.answer(msg, addr)
                return
            self.inbox.put_nowait(msg)


@dataclass
class SimDevice:
    device_id: str
    server_port: int
    password: str = PASSWORD
    contact_host: str = "127.0.0.1"

    async def open(self) -> SimDevice:
        loop = asyncio.get_running_loop()
        self.transport, self.proto = await loop.create_datagram_endpoint(
            _Proto, local_addr=("127.0.0.1", 0)
        )
        self.port = int(self.transport.get_extra_info("sockname")[1])
        self.proto.device = self
        self.call_id = new_call_id("127.0.0.1")
        self.tag = new_tag()
        self.cseq = itertools.count(1)
        return self

    def close(self) -> None:
        self.transport.close()

    def request(
        self, method: str, *, body: bytes = b"", extra: dict[str, str] | None = None
    ) -> SipRequest:
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={new_branch()}")
        h.add("From", f"<sip:{self.device_id}@{DOMAIN}>;tag={self.tag}")
        to_user = self.device_id if method == "REGISTER" else SERVER_ID
        h.add("To", f"<sip:{to_user}@{DOMAIN}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{next(self.cseq)} {method}")
        h.add("Contact", f"<sip:{self.device_id}@{self.contact_host}:{self.port}>")
        h.add("Max-Forwards", "70")
        for k, v in (extra or {}).items():
            h.add(k, v)
        if body:
            h.add("Content-Type", manscdp.CONTENT_TYPE)
        return SipRequest(h, body, method, f"sip:{SERVER_ID}@127.0.0.1:{self.server_port}")

    def send(self, request: SipRequest) -> None:
        self.transport.sendto(request.serialise(), ("127.0.0.1", self.server_port))

    async def response(self, within_s: float = 5.0, to: SipRequest | None = None) -> SipResponse:
        """The next response (to `to`, if given: late answers to earlier requests are skipped)."""
        async with asyncio.timeout(within_s):
            while True:
                msg = await self.proto.inbox.get()
                if isinstance(msg, SipResponse) and (to is None or msg.cseq == to.cseq):
                    return msg

    async def ask(self, request: SipRequest, within_s: float = 5.0) -> SipResponse:
        """Send and retransmit on Timer E (0.5 s doubling, RFC 3261 §17.1.2) until answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        interval = 0.5
        while True:
            self.send(request)
            try:
                return await self.response(
                    min(interval, max(0.0, deadline - loop.time())), to=request
                )
            except TimeoutError:
                if loop.time() >= deadline:
                    raise
                interval = min(interval * 2, 4.0)

    async def register(self, expires: int = 3600) -> SipResponse:
        """REGISTER, answer the challenge, return the final response."""
        first = await self.ask(self.request("REGISTER", extra={"Expires": str(expires)}))
        if first.status != 401:
            return first
        challenge = first.headers.get("WWW-Authenticate") or ""
        uri = f"sip:{SERVER_ID}@{DOMAIN}"
        auth = authorization_for(
            challenge, method="REGISTER", uri=uri, username=self.device_id, password=self.password
        )
        return await self.ask(
            self.request("REGISTER", extra={"Expires": str(expires), "Authorization": auth})
        )

    def answer_catalog_with(self, items_xml: str, count: int) -> None:
        """From now on, answer the server's requests: 200, and a Catalog of these items."""
        self.proto.catalog = items_xml.encode("utf-8")
        self.catalog_count = count

    def answer(self, request: SipRequest, addr: tuple[str | object, int]) -> None:
        ok = build_response(request, 200, to_tag=new_tag())
        self.transport.sendto(ok.serialise(), ("127.0.0.1", int(addr[1])))
        sn = re.search(rb"<SN>(\d+)</SN>", request.body)
        if request.method == "MESSAGE" and b"<CmdType>Catalog</CmdType>" in request.body and sn:
            assert self.proto.catalog is not None
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>Catalog</CmdType>'
                b"<SN>" + sn.group(1) + b"</SN><DeviceID>" + self.device_id.encode()
                + b"</DeviceID><SumNum>" + str(self.catalog_count).encode()
                + b"</SumNum><DeviceList>" + self.proto.catalog + b"</DeviceList></Response>"
            )  # fmt: skip
            self.send(self.request("MESSAGE", body=body))

    async def keepalive(self, sn: int = 1) -> SipResponse:
        return await self.ask(
            self.request("MESSAGE", body=manscdp.build_keepalive(sn, self.device_id))
        )
