"""One chaos round in the test suite: every process kind SIGKILLed under load, nothing lost."""

from __future__ import annotations

import os

import pytest

from tests.chaos.run import RoundPlan, run_round, summary
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1200)]


async def test_a_round_of_kills_and_a_skewed_clock_loses_and_overtakes_nothing(
    stack: Stack,
) -> None:
    # Clients spread over the stack's gateway and one whose clock is 30 ms behind: a write
    # acknowledged after another must still win over it.
    plan = RoundPlan(
        writes=int(os.environ.get("REGIONSTORE_CHAOS_WRITES", "20000")), skews=("-30ms",)
    )
    result = await run_round(stack, plan)
    report = summary([result])
    print(report)
    assert result.total_acknowledged >= plan.writes, report
    assert {k.process for k in result.kills} >= {"gateway", "writer", "kafka", "redis"}, report
    assert result.clean, report
