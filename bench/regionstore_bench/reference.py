"""The original system's app as a reference row, driven by the bench's own client.

The original app (``Application/app.py`` of the system regionstore replaces) writes straight to
a store inside the request: ``PUT /update-record?nodes=true,true,true`` upserts the customer
into its home region's collection and its backup's, and answers 200 once both writes returned.
It is not part of this repository: an operator runs a scratch copy pointed at a store of the
local stack (docs/performance.md, "End to end, every process running") and gives the bench its
URL. The bench never starts it, and without a URL the row says "not run".
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from .env import Progress, log
from .rawhttp import RawConnection, RawHttpError
from .stats import latency_summary, rate

ENVIRONMENT = "REGIONSTORE_BENCH_REFERENCE_URL"
"""The variable that gives the reference app's URL when ``--reference-url`` does not."""
PATH = "/update-record?nodes=true,true,true"
"""Every region up: the original app writes the home region and its backup in the request."""
OK = 200
NOT_RUN = "not run (no --reference-url or REGIONSTORE_BENCH_REFERENCE_URL)"


def reference_body(body: dict[str, Any]) -> dict[str, Any]:
    """The original app's request body for one of the bench's customers."""
    return {
        "customerId": body["customer_id"],
        "customerUniqueId": body["customer_unique_id"],
        "zipCodePrefix": body["customer_zip_code_prefix"],
        "city": body["customer_city"],
        "state": body["customer_state"],
    }


def not_run() -> dict[str, Any]:
    """The row when no reference URL was given: no figure at all."""
    return {"run": False, "note": NOT_RUN}


async def reference_round(
    url: str, bodies: Sequence[dict[str, Any]], *, concurrency: int, seconds: float
) -> dict[str, Any]:
    """PUT the bodies to the reference app from ``concurrency`` keep-alive connections (the
    bench's raw client) until done or ``seconds`` are up; its requests/s and latency."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(reference_body(body))
    progress = Progress("reference requests", len(bodies))
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failed
        # The original app has no authentication; the header the client always sends is ignored.
        async with RawConnection(url, "") as connection:
            while not queue.empty() and time.perf_counter() < deadline:
                payload = queue.get_nowait()
                started = time.perf_counter()
                try:
                    status, _ = await connection.send_json("PUT", PATH, payload)
                except RawHttpError as error:
                    failed += 1
                    log.warning("reference request failed: %s", error)
                    continue
                finally:
                    progress.add()
                if status == OK:
                    latencies.append(time.perf_counter() - started)
                else:
                    failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "run": True,
        "url": url,
        "path": PATH,
        "concurrency": float(concurrency),
        "seconds": elapsed,
        "requests": float(len(latencies)),
        "failed": float(failed),
        "requests_per_s": rate(len(latencies), elapsed) if latencies else math.nan,
        "latency": latency_summary(latencies),
    }
