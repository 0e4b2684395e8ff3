"""Client transactions for the requests we send (RFC 3261 §17.1): MESSAGE, SUBSCRIBE, INVITE, BYE.

Over UDP a request is retransmitted on Timer E/A (T1, doubling; non-INVITE capped at T2, and
held at T2 after a provisional response) until a final response or Timer F/B (64·T1). Over
TCP nothing is retransmitted. Responses are matched by the top Via branch and CSeq method
(§17.1.3). The number of transactions in flight is bounded: past it, new requests fail at
once with `TransactionLimit` rather than queueing without end.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from ingest.gb28181.errors import SipParseError, TransactionLimit, TransactionTimeout
from ingest.gb28181.message import SipRequest, SipResponse
from ingest.gb28181.transport import Peer, SipTransport

T1 = 0.5
T2 = 4.0
MAX_IN_FLIGHT = 20_000


@dataclass(slots=True)
class _Pending:
    request: SipRequest
    data: bytes
    peer: Peer
    future: asyncio.Future[SipResponse]
    provisional: bool = False


class ClientTransactions:
    def __init__(
        self,
        transport: SipTransport,
        *,
        t1: float = T1,
        t2: float = T2,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.transport = transport
        self.t1 = t1
        self.t2 = t2
        self.max_in_flight = max_in_flight
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.counters = {"retransmissions": 0, "timeouts": 0, "stray_responses": 0}

    def __len__(self) -> int:
        return len(self._pending)

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Send `request` to `peer` and return its final response.

        Raises `TransactionTimeout` after 64·T1 without a final response. For INVITE the
        caller sends the ACK for a 2xx (it belongs to the dialog, §13.2.2.4); this layer
        ACKs non-2xx finals itself (§17.1.1.3).
        """
        if len(self._pending) >= self.max_in_flight:
            raise TransactionLimit(f"{len(self._pending)} requests already in flight")
        key = (request.top_via.branch, request.method)
        data = request.serialise()
        loop = asyncio.get_running_loop()
        pending = _Pending(request, data, peer, loop.create_future())
        self._pending[key] = pending
        retransmit: asyncio.Task[None] | None = None
        try:
            self.transport.send(data, peer)
            if peer.transport == "UDP":
                retransmit = asyncio.create_task(self._retransmit(pending))
            try:
                async with asyncio.timeout(64 * self.t1):
                    response = await pending.future
            except TimeoutError:
                self.counters["timeouts"] += 1
                raise TransactionTimeout(
                    f"no final response to {request.method} from {peer.host}:{peer.port} "
                    f"within {64 * self.t1:.0f} s"
                ) from None
        finally:
            self._pending.pop(key, None)
            if retransmit is not None:
                retransmit.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retransmit
        if request.method == "INVITE" and response.status >= 300:
            self.transport.send(self._ack_for_failure(request, response).serialise(), peer)
        return response

    async def _retransmit(self, pending: _Pending) -> None:
        interval = self.t1
        invite = pending.request.method == "INVITE"
        while not pending.future.done():
            await asyncio.sleep(interval)
            if pending.future.done():
                return
            if invite and pending.provisional:
                return  # Timer A stops on a provisional response
            self.transport.send(pending.data, pending.peer)
            self.counters["retransmissions"] += 1
            interval = interval * 2 if invite else min(interval * 2, self.t2)
            if pending.provisional:
                interval = self.t2

    def on_response(self, response: SipResponse) -> bool:
        """Hand a received response to its transaction; False if it matches none."""
        try:
            key = (response.top_via.branch, response.cseq[1])
        except SipParseError:
            return False
        pending = self._pending.get(key)
        if pending is None:
            self.counters["stray_responses"] += 1
            return False
        if response.status < 200:
            pending.provisional = True
        elif not pending.future.done():
            pending.future.set_result(response)
        return True

    @staticmethod
    def _ack_for_failure(request: SipRequest, response: SipResponse) -> SipRequest:
        headers = request.headers.copy()
        for name in ("Content-Type", "Subject", "Contact", "Content-Length"):
            headers.remove(name)
        headers.set("To", response.headers.get("To") or "")
        headers.set("CSeq", f"{request.cseq[0]} ACK")
        return SipRequest(headers, b"", "ACK", request.uri)
