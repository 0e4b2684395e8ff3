"""Write a demo camera ledger CSV (Chinese headers, as a province's Excel export has them).

    python bench/gen_ledger.py N OUT.csv [--seed S] [--encoding utf-8|gb18030] [--crs wgs84|gcj02]

Rows come from `camera_registry.demo.generate_cameras` in chunks of 200k, so memory stays
bounded whatever N is. Chunk k uses seed+k, and each chunk starts every region's GB/T 28181
serial where the previous chunk stopped, so IDs (and IPs, MACs, device serials) are unique
across the whole file. `--crs gcj02` shifts coordinates to GCJ-02, as ledgers surveyed with
Chinese web maps have them; the 坐标系 column says which. UTF-8 output carries a BOM so that
Excel opens it with the right encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import cast

import numpy as np

from camera_registry.demo.cameras import COLUMNS, generate_cameras
from camera_registry.fields import BY_NAME, FIELDS
from geo.crs import wgs84_to_gcj02

CHUNK = 200_000
ENCODINGS = {"utf-8": "utf-8-sig", "gb18030": "gb18030"}
CRS_LABELS = {"wgs84": "WGS84", "gcj02": "GCJ02"}

_PER_ROW = frozenset({"lon", "lat"})  # numeric columns whose values are (nearly) all distinct
_SPECIAL = (",", '"', "\r", "\n")  # a CSV cell holding any of these must be quoted


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e5 else repr(value)  # 65.0 → "65"
    return str(value)


def _quote(cell: str) -> str:
    if any(ch in cell for ch in _SPECIAL):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _cells(name: str, values: list[object]) -> list[str]:
    """One column as CSV cell text (RFC 4180 quoting only where a cell needs it).

    Built a column at a time rather than through csv.writer, which is several times slower:
    per-row numbers use repr, small-domain columns (levels, ports, angles) a lookup table,
    and text is scanned once for characters that force quoting.
    """
    if name in _PER_ROW:
        return ["" if v is None else repr(v) for v in values]
    if BY_NAME[name].kind != "text" or None in values:
        table = {v: _quote(_text(v)) for v in set(values)}
        return [table[v] for v in values]
    texts = cast(list[str], values)
    blob = "\x00".join(texts)
    if any(ch in blob for ch in _SPECIAL):
        return [_quote(t) for t in texts]
    return texts


def write_ledger(
    n: int, out: Path, *, seed: int = 2024, encoding: str = "utf-8", crs: str = "wgs84"
) -> None:
    columns = [f.name for f in FIELDS if f.name in COLUMNS or f.name == "crs"]
    next_serial: dict[str, int] = {}
    with out.open("w", encoding=ENCODINGS[encoding], newline="") as fh:
        fh.write(",".join(_quote(BY_NAME[c].label_zh) for c in columns) + "\r\n")
        for k, first in enumerate(range(0, n, CHUNK)):
            size = min(CHUNK, n - first)
            cams = generate_cameras(size, seed=seed + k, serial_start=next_serial)
            for code, count in Counter(cams["region_code"]).items():
                assert isinstance(code, str)
                next_serial[code] = next_serial.get(code, 1) + count
            if crs == "gcj02":
                lon, lat = wgs84_to_gcj02(
                    np.array(cams["lon"], dtype=np.float64), np.array(cams["lat"], dtype=np.float64)
                )
                cams["lon"], cams["lat"] = lon.round(6).tolist(), lat.round(6).tolist()
            cams["crs"] = [CRS_LABELS[crs]] * size
            rows = zip(*(_cells(c, cams[c]) for c in columns), strict=True)
            fh.write("".join([",".join(row) + "\r\n" for row in rows]))
            del cams, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of cameras (rows)")
    parser.add_argument("out", type=Path, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--encoding", choices=sorted(ENCODINGS), default="utf-8")
    parser.add_argument("--crs", choices=sorted(CRS_LABELS), default="wgs84")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("N must be >= 0")
    started = time.perf_counter()
    write_ledger(args.n, args.out, seed=args.seed, encoding=args.encoding, crs=args.crs)
    elapsed = time.perf_counter() - started
    rate = args.n / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {args.n:,} rows to {args.out} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
