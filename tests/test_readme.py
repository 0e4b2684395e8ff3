"""The README tells a newcomer the truth: the ledger headers the reader accepts (录像保存天数
was missing, though 一类 rows need it) and what the demo loads."""

from __future__ import annotations

import re

from camera_registry.demo.bootstrap import DEMO_CAMERAS
from camera_registry.demo.geodata import DEMO_VILLAGES
from camera_registry.fields import FIELDS

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _ledger_table() -> dict[str, tuple[str, set[str], str]]:
    start = README.index("<!-- ledger-headers")
    rows = {}
    for line in README[start:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        zh, en, aliases, notes = (c.strip() for c in line.strip("|").split("|"))
        rows[en.strip("`")] = (zh, {a.strip() for a in aliases.split(",") if a.strip()}, notes)
    return rows


def test_readme_lists_every_ledger_header_the_reader_accepts() -> None:
    table = _ledger_table()
    assert list(table) == [f.name for f in FIELDS]
    for f in FIELDS:
        zh, aliases, _ = table[f.name]
        assert zh == f.label_zh and aliases == set(f.aliases), f.name


def test_readme_says_recording_days_are_required_for_level_1() -> None:
    zh, _, notes = _ledger_table()["record_days"]
    assert zh == "录像保存天数" and "required for 一类" in notes


def test_readme_says_what_the_demo_loads() -> None:
    assert f"{DEMO_VILLAGES:,} seeded villages" in README
    assert re.search(rf"junctions and {DEMO_CAMERAS} cameras", README)
