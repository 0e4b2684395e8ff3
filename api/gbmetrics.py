"""GB/T 28181 device access on /metrics: the SIP server's counters, read at scrape time.

The server counts in plain dicts (no lock, no label look-up on the hot path of a
registration wave); this collector turns them into Prometheus families when scraped. Every
known label value is always exported, zeros included, so a series never vanishes and an
alert on `rate()` sees the first refusal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.state import METRICS, SIP
from ingest.gb28181.server import NOTIFY_EVENTS, REFUSAL_STATUS, SipServer

# registration outcome label → the server's counter
REGISTRATION_OUTCOMES = {
    "ok": "registered",
    "challenge": "challenged",
    "stale_nonce": "stale_nonce",
    "wrong_password": "wrong_password",
    "wrong_user": "wrong_user",
    "unknown_device": "unknown_device",
    "out_of_scope": "out_of_scope",
    "malformed": "malformed_register",
    "interval_too_brief": "interval_too_brief",
}
BODY_REFUSALS = {
    "malformed_xml": "malformed_body",
    "oversized": "oversized_body",
    "charset": "charset_refused",
    "content_type": "unsupported_content_type",
}
INVITE_OUTCOMES = ("ok", "refused", "timeout", "bad_answer", "not_registered")
DEPARTURES = {"unregistered": "unregistered", "expired": "expired"}


def rate_limited(server: SipServer) -> dict[str, int]:
    """Requests dropped unanswered, by which budget dropped them."""
    transport = server.transport.counters
    return {
        "source": transport["rate_limited"] - transport["rate_limited_platform"],
        "platform": transport["rate_limited_platform"],
        "overloaded": server.counters["overloaded"],
        "tasks": server.counters["tasks_refused"],
        "tcp_connections": transport["tcp_refused"],
    }


def summary(server: SipServer) -> dict[str, object]:
    """The same figures as /metrics, as JSON for `GET /gb28181/server` and the CLI."""
    c = server.counters
    return {
        "registrations": {k: c[v] for k, v in REGISTRATION_OUTCOMES.items()},
        "devices_registered": len(server.registrar.registrations),
        "devices_online": server.devices_online(),
        "keepalives": c["keepalives"],
        "keepalive_timeouts": c["keepalive_timeouts"],
        "bodies_refused": {k: c[v] for k, v in BODY_REFUSALS.items()},
        "mislabelled_charset": c["mislabelled_charset"],
        "rate_limited": rate_limited(server),
        "shed": c["shed"],
        "register_late": c["register_late"],
        "catalogs": {
            "complete": c["catalogs_complete"],
            "partial": c["catalogs_partial"],
            "counted_by_store": c["catalogs_counted_by_store"],
            "batches": c["catalog_batches"],
            "requeried": c["catalogs_requeried"],
        },
        "notify_events": {e: server.notify_by_event[e] for e in (*NOTIFY_EVENTS, "other")},
        "invites": {o: server.invites[o] for o in INVITE_OUTCOMES},
        "sip_4xx": {
            f"{status} {reason}": n for (status, reason), n in sorted(_refusals(server).items())
        },
    }


def _refusals(server: SipServer) -> dict[tuple[int, str], int]:
    out = {(status, reason): 0 for reason, status in REFUSAL_STATUS.items()}
    out.update(server.refusals)
    return out


class Gb28181Collector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        server = self.app.get(SIP)
        if server is None:
            return
        c = server.counters
        p = "camreg_gb28181_"
        regs = CounterMetricFamily(
            p + "registrations", "REGISTER requests answered, by outcome", labels=["outcome"]
        )
        for label, name in REGISTRATION_OUTCOMES.items():
            regs.add_metric([label], c[name])
        yield regs
        gone = CounterMetricFamily(
            p + "departures", "registrations that ended, by why", labels=["reason"]
        )
        for label, name in DEPARTURES.items():
            gone.add_metric([label], c[name])
        gone.add_metric(["keepalive_timeout"], c["keepalive_timeouts"])
        yield gone
        devices = GaugeMetricFamily(
            p + "devices",
            "devices registered now, and of them online (keepalives on time)",
            labels=["state"],
        )
        devices.add_metric(["registered"], len(server.registrar.registrations))
        devices.add_metric(["online"], server.devices_online())
        yield devices
        yield CounterMetricFamily(p + "keepalives", "Keepalive MESSAGEs accepted", c["keepalives"])
        bodies = CounterMetricFamily(
            p + "bodies_refused",
            "MESSAGE/NOTIFY bodies refused with a 4xx, by reason",
            labels=["reason"],
        )
        for label, name in BODY_REFUSALS.items():
            bodies.add_metric([label], c[name])
        yield bodies
        yield CounterMetricFamily(
            p + "bodies_mislabelled_charset",
            "bodies whose declared charset was wrong (decoded by sniffing, accepted)",
            c["mislabelled_charset"],
        )
        yield CounterMetricFamily(
            p + "shed",
            "new devices' REGISTERs answered 503 + Retry-After while the server was behind "
            "(load shedding, RFC 3261 §21.5.4)",
            c["shed"],
        )
        yield CounterMetricFamily(
            p + "register_late",
            "REGISTERs answered 503 + Retry-After because the registry's password lookup took "
            "longer than the deadline (8 s): the database is behind",
            c["register_late"],
        )
        limited = CounterMetricFamily(
            p + "rate_limited",
            "requests dropped unanswered, by the budget that dropped them",
            labels=["reason"],
        )
        for label, n in rate_limited(server).items():
            limited.add_metric([label], n)
        yield limited
        catalogs = CounterMetricFamily(
            p + "catalogs",
            "catalogs assembled: complete (SumNum items), partial (idle timeout), or "
            "counted_by_store (too big to track its item IDs: the store's count decides)",
            labels=["result"],
        )
        catalogs.add_metric(["complete"], c["catalogs_complete"])
        catalogs.add_metric(["partial"], c["catalogs_partial"])
        catalogs.add_metric(["counted_by_store"], c["catalogs_counted_by_store"])
        yield catalogs
        yield CounterMetricFamily(
            p + "catalogs_requeried",
            "catalogs queried once more after registering because the first answer ended partial",
            c["catalogs_requeried"],
        )
        paced = CounterMetricFamily(
            p + "catalog_backpressure",
            "catalog intake paused for the store: times engaged, MESSAGEs left unanswered "
            "(UDP: retransmitted later) and answers held back (TCP)",
            labels=["what"],
        )
        paced.add_metric(["engaged"], c["catalog_backpressure"])
        paced.add_metric(["deferred"], c["catalog_messages_deferred"])
        paced.add_metric(["held"], c["catalog_messages_held"])
        yield paced
        yield GaugeMetricFamily(
            p + "catalog_backlog_items",
            "catalog items handed to the store and not yet written",
            server.catalog_backlog,
        )
        notify = CounterMetricFamily(
            p + "notify_events", "catalog NOTIFY items by event", labels=["event"]
        )
        for event in (*NOTIFY_EVENTS, "other"):
            notify.add_metric([event], server.notify_by_event[event])
        yield notify
        invites = CounterMetricFamily(
            p + "invites", "INVITEs we sent to devices, by outcome", labels=["outcome"]
        )
        for outcome in INVITE_OUTCOMES:
            invites.add_metric([outcome], server.invites[outcome])
        yield invites
        refusals = CounterMetricFamily(
            p + "sip_responses_4xx",
            "every SIP 4xx we sent, by status and counted reason",
            labels=["status", "reason"],
        )
        for (status, reason), n in sorted(_refusals(server).items()):
            refusals.add_metric([str(status), reason], n)
        yield refusals
        yield CounterMetricFamily(
            p + "malformed_messages",
            "SIP messages that did not parse (answered 400 when readable enough)",
            c["malformed_message"],
        )


async def gb28181_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Export the SIP server's counters for as long as the app runs."""
    collector = Gb28181Collector(app)
    app[METRICS].registry.register(collector)
    try:
        yield
    finally:
        app[METRICS].registry.unregister(collector)
