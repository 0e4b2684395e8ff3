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
import csv
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from camera_registry.demo import COLUMNS, generate_cameras
from camera_registry.fields import BY_NAME, FIELDS

CHUNK = 200_000
ENCODINGS = {"utf-8": "utf-8-sig", "gb18030": "gb18030"}
CRS_LABELS = {"wgs84": "WGS84", "gcj02": "GCJ02"}

_FIXED6 = frozenset({"lon", "lat"})  # printed with 6 decimals; other floats as short as exact


def wgs84_to_gcj02(
    lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The published WGS-84 → GCJ-02 offset (valid inside mainland China), vectorised."""
    a, ee = 6378245.0, 0.00669342162296594323
    x, y = lon - 105.0, lat - 35.0
    pi = math.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    dlat += common
    dlat += (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    dlon += common
    dlon += (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1.0 - ee * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((a * (1.0 - ee)) / (magic * sqrt_magic) * pi)
    dlon = (dlon * 180.0) / (a / sqrt_magic * np.cos(rad) * pi)
    return lon + dlon, lat + dlat


def _format(name: str, values: list[object]) -> list[object]:
    """CSV cell text for one column: None → empty, floats without a spurious '.0'."""
    if BY_NAME[name].kind != "float":
        return values
    spec = ".6f" if name in _FIXED6 else "g"
    return ["" if v is None else format(v, spec) for v in values]


def write_ledger(
    n: int, out: Path, *, seed: int = 2024, encoding: str = "utf-8", crs: str = "wgs84"
) -> None:
    columns = [f.name for f in FIELDS if f.name in COLUMNS or f.name == "crs"]
    next_serial: dict[str, int] = {}
    with out.open("w", encoding=ENCODINGS[encoding], newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([BY_NAME[c].label_zh for c in columns])
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
            writer.writerows(zip(*(_format(c, cams[c]) for c in columns), strict=True))
            del cams


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
