"""SIP message parsing, serialisation and TCP framing: round trips, compact forms, caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.gb28181.errors import MessageTooLarge, SipParseError
from ingest.gb28181.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    parse_message,
)

token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
digits20 = st.text("0123456789", min_size=20, max_size=20)
header_value = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1,
    max_size=40,
)


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    user = draw(digits20)
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{draw(st.integers(1, 65535))};branch=z9hG4bK{draw(token)}")
    h.add("From", f"<sip:{user}@3402000000>;tag={draw(token)}")
    h.add("To", f"<sip:{user}@3402000000>")
    h.add("Call-ID", draw(token))
    h.add("CSeq", f"{draw(st.integers(0, 2**31))} MESSAGE")
    for _ in range(draw(st.integers(0, 4))):
        h.add(f"X-{draw(token)}", draw(header_value))
    body = draw(st.binary(max_size=2000))
    if body:
        h.add("Content-Type", "Application/MANSCDP+xml")
    return SipRequest(h, body, "MESSAGE", f"sip:{user}@127.0.0.1:5060")


@settings(max_examples=150, deadline=None)
@given(requests())
def test_request_round_trips_through_serialise_and_parse(req: SipRequest) -> None:
    parsed = parse_message(req.serialise())
    assert isinstance(parsed, SipRequest)
    assert (parsed.method, parsed.uri, parsed.body) == (req.method, req.uri, req.body)
    assert parsed.call_id == req.call_id
    assert parsed.cseq == req.cseq
    assert list(parsed.headers)[:5] == list(req.headers)[:5]
    assert parsed.serialise() == req.serialise()


@settings(max_examples=100, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=6), st.lists(st.integers(1, 97), max_size=40))
def test_tcp_framer_cuts_any_chunking_into_the_same_messages(
    reqs: list[SipRequest], cuts: list[int]
) -> None:
    stream = b"".join(b"\r\n" * (i % 2) + r.serialise() for i, r in enumerate(reqs))
    framer = StreamFramer()
    frames: list[bytes] = []
    pos = 0
    for cut in cuts:
        frames += framer.feed(stream[pos : pos + cut])
        pos += cut
    frames += framer.feed(stream[pos:])
    parsed = [parse_message(f, stream=True) for f in frames]
    assert [p.serialise() for p in parsed] == [r.serialise() for r in reqs]
    assert framer.buffered == 0


def test_compact_headers_folded_lines_and_bare_lf_are_understood() -> None:
    raw = (
        b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n"
        b"v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\n"
        b"f: <sip:34020000001320000001@3402000000>\n"
        b" ;tag=abc\n"
        b"t: <sip:34020000002000000001@3402000000>\n"
        b"i: call-1\n"
        b"CSeq: 7 MESSAGE\n"
        b"c: Application/MANSCDP+xml; charset=GB2312\n"
        b"l: 4\n\nbodyEXTRA"
    )
    msg = parse_message(raw)
    assert msg.call_id == "call-1"
    assert msg.from_.tag == "abc"
    assert msg.body == b"body"
    assert msg.charset == "GB2312"
    assert msg.top_via.host == "10.0.0.5"


def test_udp_message_without_content_length_takes_the_rest_of_the_datagram() -> None:
    raw = (
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n<x/>"
    )
    assert parse_message(raw).body == b"<x/>"
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(raw, stream=True)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"garbage\r\n\r\n", "bad start line"),
        (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", "missing From"),
        (
            b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
            b"Call-ID: c\r\nCSeq: x MESSAGE\r\n\r\n",
            "bad CSeq",
        ),
        (
            b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
            b"Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 99\r\n\r\nshort",
            "shorter than Content-Length",
        ),
    ],
)
def test_broken_messages_raise_a_short_reason(raw: bytes, why: str) -> None:
    with pytest.raises(SipParseError, match=why):
        parse_message(raw)


def test_framer_refuses_endless_headers_and_huge_bodies() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer().feed(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"a" * 20_000)
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_body=1000).feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")


def test_response_to_a_natted_request_names_its_real_source_in_via() -> None:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bKabc")
    h.add("From", "<sip:34020000001320000001@3402000000>;tag=x")
    h.add("To", "<sip:34020000001320000001@3402000000>")
    h.add("Call-ID", "c")
    h.add("CSeq", "1 REGISTER")
    req = SipRequest(h, b"", "REGISTER", "sip:34020000002000000001@3402000000")
    resp = build_response(req, 200, to_tag="t1", source=("203.0.113.9", 40000))
    assert isinstance(resp, SipResponse)
    via = resp.top_via
    assert via.params["received"] == "203.0.113.9"
    assert via.params["rport"] == "40000"
    assert resp.to.tag == "t1"


def test_name_addr_with_display_name_and_params() -> None:
    na = NameAddr.parse('"IPC 1" <sip:34020000001320000001@10.0.0.5:5061;transport=udp>;tag=9')
    assert (na.display, na.uri.user, na.uri.host, na.uri.port) == (
        "IPC 1",
        "34020000001320000001",
        "10.0.0.5",
        5061,
    )
    assert na.uri.params == {"transport": "udp"}
    assert na.tag == "9"
