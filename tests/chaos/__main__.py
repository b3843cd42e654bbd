"""Run chaos rounds against the running local stack: python -m tests.chaos --rounds 3."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tests.chaos.nemesis import KINDS, kinds_of
from tests.chaos.run import RoundPlan, RoundResult, run_round, summary
from tests.stack import Endpoints, Stack


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    default = RoundPlan()
    parser.add_argument("--rounds", type=int, default=1, help="rounds to run (default 1)")
    parser.add_argument(
        "--writes", type=int, default=default.writes, help="acknowledged writes per round (least)"
    )
    parser.add_argument("--clients", type=int, default=default.clients, help="writer clients")
    parser.add_argument(
        "--skew",
        default="",
        help="extra gateways beside the stack's, one per clock offset, comma-separated "
        "(-5ms, -30ms, -50ms, -10s, -1d, +1d, or any FAKETIME offset); clients send each "
        "request through the next gateway",
    )
    parser.add_argument(
        "--faults",
        default="kill",
        help=f"fault kinds, comma-separated, or all: {', '.join(KINDS)} (default kill); "
        "partition needs the stack's links (make up FAULTS=1)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the nemesis's seed (default: random, printed)"
    )
    parser.add_argument(
        "--random-faults",
        type=int,
        default=default.random_faults,
        help="faults other than kills per round",
    )
    return parser.parse_args()


async def _main(arguments: argparse.Namespace) -> list[RoundResult]:
    stack = Stack(Endpoints.from_env())
    if not stack.api_answers():
        raise SystemExit("the local stack is not running: make up")
    skews = tuple(offset for offset in arguments.skew.split(",") if offset)
    kinds = kinds_of(arguments.faults)
    plan = RoundPlan(
        writes=arguments.writes,
        clients=arguments.clients,
        skews=skews,
        kinds=kinds,
        random_faults=arguments.random_faults,
    )
    results = []
    for number in range(1, arguments.rounds + 1):
        # Round n of a seeded run uses seed + n - 1: the whole run is reproducible.
        seed = None if arguments.seed is None else arguments.seed + number - 1
        print(
            f"round {number}/{arguments.rounds}: {plan.writes:,} writes, faults {', '.join(kinds)}"
            + (f", gateways offset {', '.join(skews)}" if skews else "")
        )
        results.append(await run_round(stack, dataclasses.replace(plan, seed=seed)))
        print(summary(results[-1:]), flush=True)
    return results


def main() -> None:
    arguments = _arguments()
    results = asyncio.run(_main(arguments))
    out = (
        Path(os.environ.get("RUN_DIR", ".run")) / "chaos" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([r.as_dict() for r in results], indent=2, default=str))
    print(f"\n{summary(results)}\n\nreport: {out}")
    sys.exit(0 if all(r.clean for r in results) else 1)


if __name__ == "__main__":
    main()
