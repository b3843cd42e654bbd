"""``python -m regionstore_bench.singles --label NAME [--quick]``: the single-write rounds alone.

The rounds of the full bench's scenario 2 (:func:`regionstore_bench.ingest.single_ingest`:
single POSTs at a fixed concurrency, in rounds, consumers stopped, the gateway's CPU counted),
without the bare endpoint's rounds, the wait until the writes are applied, or the other
scenarios: so that two gateways that differ in one setting can be compared in a minute or two,
e.g. ``make up TRACING=1`` against ``TRACING=0`` (docs/tracing.md). On a shared machine the
gateway's CPU per write is the steadier figure; the rate follows whatever else runs. Results in
``bench/results/singles-NAME.json``; the writes are applied once the consumers are back, and a
later bench removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any

from . import ingest
from .__main__ import RESULTS, _wait_ready
from .data import customers, run_stamp
from .env import compose_url, log, open_env
from .plan import FULL, QUICK, Plan
from .stats import latency_summary, median, rate


async def run(plan: Plan) -> dict[str, Any]:
    """The single-write rounds on the running stack."""
    async with open_env() as env:
        await _wait_ready(env)
        await env.restore_regions()
        bodies = customers(run_stamp(), "s", plan.single_requests, plan.seed + 1).bodies
        accepts = ingest.Accepts("")
        per_round = math.ceil(len(bodies) / plan.single_rounds)
        budget = plan.single_budget_s / plan.single_rounds
        gateway = ingest.ServerCpu(env.urls["gateway"])
        rates: list[float] = []
        async with (
            ingest.unmetered_key() as key,
            ingest.consumers_stopped(compose_url()) as stopped,
        ):
            for index in range(plan.single_rounds):
                with gateway.round():
                    count, seconds = await ingest.post_singles(
                        env,
                        bodies[index * per_round : (index + 1) * per_round],
                        plan.single_concurrency,
                        accepts,
                        budget,
                        key=key,
                    )
                rates.append(rate(count, seconds))
                log.info("round %d: %d sent, %.0f accepted/s", index + 1, count, rates[-1])
        gateway.requests = len(accepts.expected)
    return {
        "requests": float(gateway.requests),
        "concurrency": float(plan.single_concurrency),
        "consumers_stopped_during_rounds": float(stopped),
        "runs_accepted_per_s": rates,
        "accepted_per_s": median(rates),
        "cpu_us_per_accepted": gateway.per_request_us(),
        "accept_latency": latency_summary(accepts.request_seconds),
        "failed": float(accepts.failed),
    }


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
