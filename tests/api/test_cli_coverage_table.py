"""`camreg coverage` prints its summary to fit the terminal and never cuts a number (at 80
columns it printed "4/9,5…" and "cover…")."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from api.cli.coverage import _cells, _print_summary

ROWS: list[dict[str, Any]] = [
    {"region_code": "140105", "name": "小店区", "zone": "urban", "cells_covered": 4,
     "cells": 9521, "covered_share": 4 / 9521, "villages_covered": 12, "villages": 340,
     "junctions_covered": 35, "junctions": 1250, "cameras": 1234, "cameras_assumed": 56,
     "cameras_per_km2": 4.3},
    {"region_code": "140121", "name": "清徐县", "zone": "rural", "cells_covered": 0, "cells": 0,
     "covered_share": None, "villages_covered": 180, "villages": 205, "junctions_covered": 40,
     "junctions": 64, "cameras": 310, "cameras_assumed": 0, "cameras_per_km2": 0.5},
]  # fmt: skip
RUN = {"region": "1401", "id": "00000000-0000-0000-0000-000000000001",
       "summary": {"covered_share": 0.5, "village_share": 0.6, "junction_share": 0.7,
                   "gaps": 1234, "proposals": 20}}  # fmt: skip


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40])
def test_coverage_summary_fits_the_terminal_and_keeps_every_number_whole(width: int) -> None:
    out = io.StringIO()
    _print_summary(ROWS, RUN, Console(file=out, width=width, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    for row in ROWS:
        for cell in _cells(row):
            if cell != row["name"]:  # names may wrap; numbers and codes stay whole
                assert cell in text, (width, cell, text)
    for header in ("covered", "villages", "junctions", "cameras"):
        assert header in text
