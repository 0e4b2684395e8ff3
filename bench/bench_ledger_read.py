"""How fast `ingest.ledger_read` reads a ledger (not a timed test: prints rows/s).

    python bench/bench_ledger_read.py [--rows 300000] [--runs 5] [--chunk-rows 50000]
                                      [--encoding utf-8-sig|gb18030] [--xlsx-rows 50000]

Writes a realistic 15-column ledger (Chinese headers, a 备注 column the importer ignores,
some empty optional cells, ~0.5% of addresses with an ASCII comma and so in double quotes) to
a temporary directory, then reads it `--runs` times and reports the median and best rows/s
(CPU time of this process, which is steadier than wall time on a shared machine; wall time
is shown too). The whole pipeline needs ≥100k rows/s, so the reader should manage several
hundred thousand.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.ledger.read import open_ledger

HEADER = [
    "国标编码", "点位名称", "点位类型", "经度", "纬度", "坐标系", "行政区划", "安装地址",
    "方向角", "水平视场角", "安装高度", "建设单位", "安装时间", "厂商", "备注",
]  # fmt: skip
LEVELS = ["一类点", "二类点", "三类点"]
VENDORS = ["海康威视", "大华", "宇视", "华为", "天地伟业"]
OWNERS = ["合肥市公安局", "蜀山分局", "包河分局", "庐阳分局"]
ROADS = ["长江西路", "黄山路", "望江西路", "潜山路", "金寨路", "徽州大道"]


def _row(i: int, rnd: random.Random) -> list[str]:
    district = rnd.choice(["340104", "340103", "340111", "340102"])
    address = f"安徽省合肥市{rnd.choice(ROADS)}{rnd.randrange(1, 999)}号"
    if rnd.random() < 0.005:
        address += ",东南角"  # ASCII comma: csv.writer puts the cell in double quotes
    return [
        f"{district}0000132{i:07d}",
        f"{rnd.choice(ROADS)}与{rnd.choice(ROADS)}交口{i % 7}号杆",
        rnd.choice(LEVELS),
        f"{116.9 + rnd.random() * 0.6:.6f}",
        f"{31.6 + rnd.random() * 0.4:.6f}",
        "WGS84",
        district,
        address,
        str(rnd.randrange(0, 360)),
        rnd.choice(["", "60", "90.5", "110"]),
        rnd.choice(["", "4", "6", "8.5"]),
        rnd.choice(OWNERS),
        f"20{rnd.randrange(15, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
        rnd.choice(VENDORS),
        "" if rnd.random() < 0.9 else "已验收",
    ]


def write_csv(path: Path, rows: int, encoding: str) -> None:
    rnd = random.Random(2024)
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)  # "\r\n" line ends, as Excel writes them
        writer.writerow(HEADER)
        for start in range(0, rows, 10_000):
            writer.writerows(_row(i, rnd) for i in range(start, min(rows, start + 10_000)))


def write_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    rnd = random.Random(2024)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("台账")
    ws.append(HEADER)
    for i in range(rows):
        r: list[object] = list(_row(i, rnd))
        r[3], r[4] = float(str(r[3])), float(str(r[4]))
        ws.append(r)
    wb.save(path)


def read_once(path: Path, chunk_rows: int) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    with open_ledger(path) as ledger:
        for chunk in ledger.chunks(chunk_rows):
            n += len(chunk.rows)
    return n, time.process_time() - cpu, time.perf_counter() - wall


def anchor_once(path: Path, encoding: str) -> tuple[int, float, float]:
    """The anchor: the standard library's csv.reader over the same file, rows discarded."""
    wall, cpu = time.perf_counter(), time.process_time()
    with path.open(encoding=encoding, newline="") as fh:
        n = sum(1 for _ in csv.reader(fh)) - 1
    return n, time.process_time() - cpu, time.perf_counter() - wall


def bench(path: Path, runs: int, chunk_rows: int, encoding: str | None = None) -> None:
    results = [read_once(path, chunk_rows) for _ in range(runs)]
    n = results[0][0]
    cpu = sorted(n / r[1] for r in results)
    wall = sorted(n / r[2] for r in results)
    size = path.stat().st_size / 1e6
    print(
        f"{path.name}: {n:,} rows, {size:.0f} MB, chunks of {chunk_rows:,}: "
        f"median {statistics.median(cpu):,.0f} rows/s, best {cpu[-1]:,.0f} (CPU time); "
        f"median {statistics.median(wall):,.0f} rows/s wall"
    )
    if encoding is not None:
        anchors = sorted(n / r[1] for r in (anchor_once(path, encoding) for _ in range(runs)))
        print(
            f"anchor csv.reader (parse only, no header mapping or chunks): median "
            f"{statistics.median(anchors):,.0f} rows/s (CPU time); ratio "
            f"{statistics.median(cpu) / statistics.median(anchors):.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--encoding", choices=["utf-8-sig", "gb18030"], default="utf-8-sig")
    parser.add_argument("--xlsx-rows", type=int, default=0, help="also time an XLSX this long")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.csv"
        write_csv(path, args.rows, args.encoding)
        bench(path, args.runs, args.chunk_rows, args.encoding)
        if args.xlsx_rows:
            xlsx = Path(tmp) / "ledger.xlsx"
            write_xlsx(xlsx, args.xlsx_rows)
            bench(xlsx, max(1, args.runs // 2), args.chunk_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
