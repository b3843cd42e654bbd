"""``python -m regionstore_bench.singles --label NAME [--quick]``: the single-write round alone.

The full bench's scenario 2 (:func:`regionstore_bench.ingest.single_ingest`: single POSTs at a
fixed concurrency, in rounds, consumers stopped, then the bare endpoint's rounds), without the
other scenarios, so that two stacks that differ in one setting can be compared in minutes: run
it once on ``make up TRACING=1`` and once on ``make up TRACING=0`` (docs/tracing.md). Results
in ``bench/results/singles-NAME.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from . import ingest
from .__main__ import RESULTS, _wait_ready
from .data import customers, run_stamp
from .env import log, open_env
from .plan import FULL, QUICK, Plan


async def run(plan: Plan) -> dict[str, Any]:
    """The single-write round on the running stack; its customers are removed after."""
    async with open_env() as env:
        await _wait_ready(env)
        await env.restore_regions()
        singles = customers(
            run_stamp(), "s", plan.single_requests + plan.unloaded_requests, plan.seed + 1
        )
        try:
            result = await ingest.single_ingest(env, plan, singles)
        finally:
            await env.delete_customers(singles)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regionstore_bench.singles", description=__doc__)
    parser.add_argument("--label", required=True, help="names the results file")
    parser.add_argument("--quick", action="store_true", help="the quick plan's counts")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    result = {"label": args.label, "plan": plan.name, "started_at": started_at}
    result["ingest_single"] = asyncio.run(run(plan))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"singles-{args.label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    single = result["ingest_single"]
    log.info(
        "%s: %.0f accepted/s (runs %s), %.0f us gateway CPU per write, p50 %.2f ms: %s",
        args.label,
        single["accepted_per_s"],
        [round(r) for r in single["runs_accepted_per_s"]],
        single["cpu_us_per_accepted"],
        single["accept_latency"]["p50_ms"],
        path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
