"""Digest nonces and replays, MANSCDP charsets and hardening, catalog assembly, rate limits."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.gb28181 import manscdp
from ingest.gb28181.catalog import UNTRACKED_SETTLE_S, CatalogAssembler, CatalogResult
from ingest.gb28181.digest import (
    AuthResult,
    DigestVerifier,
    NonceIssuer,
    NonceState,
    ReplayCache,
    authorization_for,
)
from ingest.gb28181.errors import BodyCharsetError, ManscdpError
from ingest.gb28181.transport import Peer, RateLimiter, target_for

REALM = "3402000000"
DEV = "34020000001320000001"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock, replay_size: int = 100) -> DigestVerifier:
    return DigestVerifier(
        REALM, NonceIssuer(b"s" * 32, ttl_s=60, clock=clock), ReplayCache(replay_size)
    )


def answer(v: DigestVerifier, password: str, *, nc: int = 1, uri: str = "sip:x@3402000000") -> str:
    return authorization_for(
        v.challenge(), method="REGISTER", uri=uri, username=DEV, password=password, nc=nc
    )


def test_right_password_passes_wrong_is_refused_and_uri_is_taken_from_the_header() -> None:
    clock = Clock()
    v = verifier(clock)
    for uri in ("sip:34020000002000000001@3402000000", "sip:127.0.0.1:5060"):
        auth = answer(v, "pw", uri=uri)
        assert v.verify(auth, method="REGISTER", username=DEV, password="pw") is AuthResult.OK
    auth = answer(v, "nope")
    assert (
        v.verify(auth, method="REGISTER", username=DEV, password="pw") is AuthResult.WRONG_PASSWORD
    )
    assert v.verify(auth, method="REGISTER", username="34020000001320000002", password="pw") is (
        AuthResult.WRONG_USER
    )


def test_expired_nonce_is_stale_and_forged_nonce_is_challenged() -> None:
    clock = Clock()
    v = verifier(clock)
    auth = answer(v, "pw")
    clock.now += 61
    assert v.verify(auth, method="REGISTER", username=DEV, password="pw") is AuthResult.STALE
    forged = auth.replace('nonce="', 'nonce="AAAA', 1)
    assert v.verify(forged, method="REGISTER", username=DEV, password="pw") in (
        AuthResult.CHALLENGE,
        AuthResult.WRONG_PASSWORD,
    )
    issuer = NonceIssuer(b"k" * 32)
    assert issuer.check(issuer.issue()) is NonceState.OK
    assert NonceIssuer(b"other" * 8).check(issuer.issue()) is NonceState.INVALID


def test_replayed_nonce_count_is_refused_and_the_cache_stays_bounded() -> None:
    clock = Clock()
    v = verifier(clock, replay_size=10)
    auth = answer(v, "pw", nc=1)
    assert v.verify(auth, method="REGISTER", username=DEV, password="pw") is AuthResult.OK
    assert v.verify(auth, method="REGISTER", username=DEV, password="pw") is AuthResult.STALE
    for _ in range(50):
        a = answer(v, "pw")
        assert v.verify(a, method="REGISTER", username=DEV, password="pw") is AuthResult.OK
    assert len(v.replays) == 10


@pytest.mark.parametrize(
    "text", ["迎泽大街", "太原市小店区长治路与南中环街交叉口东北角", "A1 路口"]
)
@pytest.mark.parametrize("declared", [None, "GB2312", "UTF-8", "gbk", "GB18030"])
@pytest.mark.parametrize("actual", ["gb2312", "utf-8"])
def test_sniffing_decodes_chinese_whatever_is_declared(
    text: str, declared: str | None, actual: str
) -> None:
    decoded = manscdp.decode_body(f"<a>{text}</a>".encode(actual), declared)
    assert decoded.text == f"<a>{text}</a>"


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=2, max_size=30))
def test_gbk_encodable_chinese_survives_either_encoding(text: str) -> None:
    try:
        gb = text.encode("gbk")
    except UnicodeEncodeError:
        return
    # A GBK trail byte can be ASCII (0x40-0x7E): b"\xe9\xb7\xbdN" is 榉絅 in GBK and valid
    # UTF-8 (鷽N) too. Such bytes are truly ambiguous and the declaration rightly wins; the
    # property is that a wrong declaration never wins over bytes that contradict it.
    assume(not _valid_utf8(gb))
    assert manscdp.decode_body(gb, "UTF-8").text == text
    assert manscdp.decode_body(text.encode("utf-8"), "GB2312").text == text


def test_xml_declaration_cannot_override_the_sniffed_charset() -> None:
    body = '<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>Catalog</CmdType><SN>1</SN>' \
        f"<DeviceID>{DEV}</DeviceID><SumNum>1</SumNum><DeviceList Num=\"1\"><Item>" \
        f"<DeviceID>{DEV}</DeviceID><Name>迎泽大街</Name><Info><PointType>2</PointType></Info>" \
        "</Item></DeviceList></Response>"  # fmt: skip
    msg = manscdp.parse_manscdp(body.encode("gb18030"))
    assert msg.items[0].name == "迎泽大街"
    assert msg.items[0].po_type == 2  # PointType accepted for PoType
    assert msg.decoded.mislabelled


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Notify><CmdType>Keepalive</CmdType>",
        b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><Notify/>',
        b"<Other><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Other>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>",
        b"<Notify>" + b"<a>x</a>" * 20_000 + b"</Notify>",
    ],
)
def test_unusable_bodies_raise_manscdp_error(body: bytes) -> None:
    with pytest.raises(ManscdpError):
        manscdp.parse_manscdp(body)


@pytest.mark.parametrize("declared", [None, "GB2312", "UTF-8", "no-such-charset"])
def test_bytes_in_no_device_charset_are_refused_not_decoded_to_mojibake(
    declared: str | None,
) -> None:
    body = f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID>".encode()
    with pytest.raises(BodyCharsetError, match="neither UTF-8 nor GB18030"):
        manscdp.parse_manscdp(body + b"<Status>\xff\xfe\x80</Status></Notify>", declared)


def test_a_declared_other_charset_that_decodes_cleanly_is_believed() -> None:
    decoded = manscdp.decode_body("<a>Ünïcödé</a>".encode("latin-1") + b"\xff", "ISO-8859-1")
    assert (decoded.charset, decoded.sniffed) == ("iso-8859-1", True)


def test_bad_numbers_in_an_item_are_named_not_fatal() -> None:
    body = (
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID>"
        f"<SumNum>1</SumNum><DeviceList><Item><DeviceID>{DEV}</DeviceID>"
        "<Longitude>east</Longitude><Info><RecordSaveDays>ninety</RecordSaveDays></Info>"
        "</Item></DeviceList></Response>"
    ).encode()
    item = manscdp.parse_manscdp(body).items[0]
    assert item.longitude is None and item.record_save_days is None
    assert item.problems == ["Longitude is not a number", "RecordSaveDays is not an integer"]


def catalog_msg(sn: int, ids: list[str], sum_num: int) -> manscdp.Manscdp:
    items = "".join(f"<Item><DeviceID>{i}</DeviceID></Item>" for i in ids)
    return manscdp.parse_manscdp(
        f"<Response><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>{DEV}</DeviceID>"
        f"<SumNum>{sum_num}</SumNum><DeviceList>{items}</DeviceList></Response>".encode()
    )


async def test_assembler_completes_at_sum_num_and_never_counts_a_duplicate_twice() -> None:
    done: list[CatalogResult] = []
    asm = CatalogAssembler(done.append, idle_timeout_s=5)
    fut = asm.expect(DEV, 7)
    assert fut is not None
    asm.add(DEV, catalog_msg(7, ["a", "b"], 3))
    asm.add(DEV, catalog_msg(7, ["b"], 3))
    asm.add(DEV, catalog_msg(7, ["c"], 3))
    result = await fut
    assert result.complete and sorted(result.items) == ["a", "b", "c"]
    assert result.repeated == 1
    assert done == [result]
    assert len(asm) == 0


async def test_assembler_bounds_sessions_and_finishes_idle_ones_as_partial() -> None:
    done: list[CatalogResult] = []
    asm = CatalogAssembler(done.append, idle_timeout_s=0.1, max_sessions=2)
    assert asm.expect(DEV, 1) is not None
    assert asm.expect(DEV, 2) is not None
    assert asm.expect(DEV, 3) is None
    assert not asm.add(DEV, catalog_msg(4, ["x"], 1))  # unknown SN, no room
    await asyncio.sleep(0.3)
    assert [r.complete for r in done] == [False, False]
    assert asm.refused_sessions == 2


async def test_assembler_hands_batches_over_and_never_holds_more_than_its_buffer() -> None:
    """A catalog of 10 with a buffer of 3: batches of 3 as they arrive, the end last; the
    duplicate is counted once, and the IDs tracked are given back at the end."""
    done: list[CatalogResult] = []
    asm = CatalogAssembler(done.append, idle_timeout_s=5, batch_items=3, max_tracked=100)
    fut = asm.expect(DEV, 8)
    assert fut is not None
    ids = [f"i{n}" for n in range(10)]
    for part in (ids[4:8], ids[:4], ids[2:4], ids[8:]):
        asm.add(DEV, catalog_msg(8, part, 10))
        assert all(len(r.items) <= 3 for r in done)
    result = await fut
    assert [r.final for r in done] == [False] * (len(done) - 1) + [True]
    assert result.complete and result.streamed and result.received == 10
    assert result.repeated == 2
    assert {i for r in done for i in r.items} == set(ids)
    assert len({r.generation for r in done}) == 1
    assert asm._tracked == 0


async def test_assembler_beyond_its_id_budget_ends_at_idle_for_the_store_to_count() -> None:
    done: list[CatalogResult] = []
    asm = CatalogAssembler(done.append, idle_timeout_s=0.1, batch_items=2, max_tracked=3)
    fut = asm.expect(DEV, 9)
    assert fut is not None
    asm.add(DEV, catalog_msg(9, ["a", "b", "c", "d", "e"], 5))
    assert len(asm) == 1  # five items arrived, but it cannot know they were distinct
    result = await fut
    assert not result.tracked and not result.complete and result.received == 5
    assert asm.untracked_sessions == 1 and asm._tracked == 0
    assert {i for r in done for i in r.items} == {"a", "b", "c", "d", "e"}


def test_rate_limiter_refuses_a_flood_and_forgets_old_sources() -> None:
    clock = Clock()
    rl = RateLimiter(10, 5, max_keys=100, clock=clock)
    assert [rl.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 1
    assert rl.allow("a")
    for port in range(10_000):
        rl.allow(("10.0.0.1", port))
    assert len(rl) == 100


def test_private_contact_not_matching_the_source_is_natted_public_one_is_honoured() -> None:
    src = Peer("UDP", "203.0.113.9", 40000)  # pure function: no packet is sent
    assert target_for("192.168.1.64", 5060, src) == src
    assert target_for("1.2.3.4", 5070, src) == Peer("UDP", "1.2.3.4", 5070)
    lan = Peer("UDP", "10.1.2.3", 5060)
    assert target_for("10.1.2.3", 5062, lan) == Peer("UDP", "10.1.2.3", 5062)
    tcp = Peer("TCP", "10.1.2.3", 40001)
    assert target_for("10.1.2.3", 5060, tcp) == tcp


async def test_assembler_beyond_its_id_budget_ends_soon_after_sumnum_items() -> None:
    """Untracked, SumNum counted items end the catalog after a short quiet, not the idle
    timeout (40 s at the end of every province-sized catalog); a late item still joins."""
    done: list[CatalogResult] = []
    asm = CatalogAssembler(done.append, idle_timeout_s=30, batch_items=2, max_tracked=3)
    fut = asm.expect(DEV, 10)
    assert fut is not None
    asm.add(DEV, catalog_msg(10, ["a", "b", "c", "d"], 5))
    asm.add(DEV, catalog_msg(10, ["e"], 5))  # five counted: settling
    asm.add(DEV, catalog_msg(10, ["f"], 5))  # late, within the quiet: joins the session
    async with asyncio.timeout(UNTRACKED_SETTLE_S + 2):
        result = await fut
    assert not result.tracked and result.received == 6
    assert {i for r in done for i in r.items} == {"a", "b", "c", "d", "e", "f"}
