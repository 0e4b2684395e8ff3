"""The hardened parser refuses what hostile peers on a camera network could send."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree  # type: ignore[import-untyped]

import ingest.xml_safe as xml_safe
from ingest.errors import IngestError, MalformedXml
from ingest.xml_safe import parse_xml

SECRET = "TOP-SECRET-3402-ledger-password"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""


def xxe_payload(path: Path) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{path}">]><r>&x;</r>'
    ).encode()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def test_parses_plain_xml_and_drops_comments() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?>\n<a><!-- hi --><b>x</b></a>')
    assert root.tag == "a"
    assert [child.tag for child in root] == ["b"]
    assert root[0].text == "x"


def test_malformed_is_an_ingest_error() -> None:
    assert issubclass(MalformedXml, IngestError)


def test_xxe_file_entity_is_rejected_without_leaking(secret_file: Path) -> None:
    with pytest.raises(MalformedXml, match="DOCTYPE") as info:
        parse_xml(xxe_payload(secret_file))
    assert SECRET not in str(info.value)


def test_parser_itself_does_not_resolve_entities(secret_file: Path) -> None:
    """Defence in depth: even if the DOCTYPE refusal were bypassed, no file is read."""
    root = etree.fromstring(xxe_payload(secret_file), parser=xml_safe._parser())
    assert SECRET not in etree.tostring(root).decode()
    assert SECRET not in "".join(root.itertext())


@pytest.mark.parametrize(
    "payload",
    [
        b'<!doctype r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>',
        b"<! DOCTYPE r><r/>",
        b'<?xml version="1.0"?>\n  <!DOCTYPE r []><r/>',
        b'<!ENTITY x "y"><r/>',
    ],
)
def test_any_dtd_markup_is_rejected(payload: bytes) -> None:
    with pytest.raises(MalformedXml):
        parse_xml(payload)


def test_utf16_cannot_hide_a_doctype(secret_file: Path) -> None:
    text = (
        xxe_payload(secret_file)
        .decode()
        .replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    )
    with pytest.raises(MalformedXml) as info:
        parse_xml(text.encode("utf-16"))
    assert SECRET not in str(info.value)


def test_billion_laughs_is_rejected_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(MalformedXml):
        parse_xml(BILLION_LAUGHS)
    assert time.perf_counter() - start < 1.0


def test_one_megabyte_datagram_is_rejected_before_parsing() -> None:
    data = b"<a>" + b"x" * (1024 * 1024) + b"</a>"
    with pytest.raises(MalformedXml, match="too large"):
        parse_xml(data)
    assert parse_xml(data, max_bytes=2 * 1024 * 1024).tag == "a"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"\x00\xff\xfe garbage",
        b"hello camera",
        b"<a><b></a>",
        b"<a>",
        b"<a/><b/>",
        b"\xff\xd8\xff\xe0 JFIF",
    ],
)
def test_garbage_is_rejected(payload: bytes) -> None:
    with pytest.raises(MalformedXml) as info:
        parse_xml(payload)
    assert len(str(info.value)) < 200


def test_the_reused_parser_starts_afresh_after_a_failure_and_per_thread() -> None:
    """One parser per thread is kept: a refused document leaves nothing behind for the next,
    and another thread gets a parser of its own."""
    import threading

    with pytest.raises(MalformedXml):
        parse_xml(b"<a><b></a>")
    assert parse_xml(b"<ok><x>1</x></ok>").findtext("x") == "1"
    with pytest.raises(MalformedXml):
        parse_xml(b"<a>")
    assert parse_xml(b"<again/>").tag == "again"
    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(xml_safe._parser()))
    worker.start()
    worker.join()
    assert seen[0] is not xml_safe._parser()
