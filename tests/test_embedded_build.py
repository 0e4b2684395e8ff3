"""The product's SQL uses nothing the embedded PostgreSQL lacks: the pgserver build (the
default database of `make run` and of `make test` on a fresh machine) has no libxml and no
ICU, so an XML function or an ICU collation works on a packaged server and fails on a fresh
clone (the cascade's catalog once answered "unsupported XML feature" there)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

NEEDS_LIBXML_OR_ICU = re.compile(
    r"\b(xmlelement|xmlforest|xmlagg|xmlconcat|xmlparse|xmlserialize|xmlpi|xmlroot|xmlcomment"
    r"|xmltable|xmlexists|xpath|xpath_exists|xml_is_well_formed\w*|query_to_xml\w*"
    r"|table_to_xml\w*|cursor_to_xml\w*)\s*\(|-x-icu\b|provider\s*=\s*icu",
    re.IGNORECASE,
)
PRODUCT = ("api", "camera_registry", "health", "ingest", "geo")


def test_no_sql_needs_libxml_or_icu() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*"))
        if path.suffix in (".py", ".sql")
        for text in [path.read_text(encoding="utf-8")]
        for m in NEEDS_LIBXML_OR_ICU.finditer(text)
    ]
    assert found == []
