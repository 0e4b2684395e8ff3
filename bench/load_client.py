"""A small closed-loop HTTP load generator, run as its own process so it does not share the
server's GIL. Reads a JSON job on stdin: {"urls": [...], "headers": {...}, "concurrency": n};
prints {"latencies": [...seconds...], "elapsed": s, "statuses": {...}, "bytes": n}.
A "url" may be an object {"method", "url", "json"} for other methods."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


async def main() -> None:
    job = json.load(sys.stdin)
    urls: list[Any] = job["urls"]  # "url" for a GET, or {"method", "url", "json"}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    total_bytes = 0
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)
    timeout = aiohttp.ClientTimeout(total=60)
    conn = aiohttp.TCPConnector(limit=job["concurrency"])
    async with aiohttp.ClientSession(
        headers=job.get("headers"), timeout=timeout, connector=conn
    ) as s:

        async def worker() -> None:
            nonlocal total_bytes
            while not queue.empty():
                item = queue.get_nowait()
                t = time.perf_counter()
                if isinstance(item, str):
                    req = s.get(item)
                else:
                    req = s.request(item["method"], item["url"], json=item.get("json"))
                async with req as resp:
                    body = await resp.read()
                latencies.append(time.perf_counter() - t)
                statuses[resp.status] += 1
                total_bytes += len(body)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(job["concurrency"])))
        elapsed = time.perf_counter() - start
    json.dump({"latencies": latencies, "elapsed": elapsed, "statuses": dict(statuses),
               "bytes": total_bytes}, sys.stdout)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
