"""Run chaos rounds against the running local stack: python -m tests.chaos --rounds 3."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

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
    return parser.parse_args()


async def _main(arguments: argparse.Namespace) -> list[RoundResult]:
    stack = Stack(Endpoints.from_env())
    if not stack.api_answers():
        raise SystemExit("the local stack is not running: make up")
    skews = tuple(offset for offset in arguments.skew.split(",") if offset)
    plan = RoundPlan(writes=arguments.writes, clients=arguments.clients, skews=skews)
    results = []
    for number in range(1, arguments.rounds + 1):
        print(
            f"round {number}/{arguments.rounds}: {plan.writes:,} writes, every kind killed once"
            + (f", gateways offset {', '.join(skews)}" if skews else "")
        )
        results.append(await run_round(stack, plan))
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
