"""A small closed-loop HTTP load generator, run as its own process so it does not share the
server's GIL. Reads a JSON job on stdin: {"urls": [...], "headers": {...}, "concurrency": n};
prints {"latencies": [...seconds...], "elapsed": s, "statuses": {...}, "bytes": n}."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def main() -> None:
    job = json.load(sys.stdin)
    urls: list[str] = job["urls"]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    total_bytes = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
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
                url = queue.get_nowait()
                t = time.perf_counter()
                async with s.get(url) as resp:
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
