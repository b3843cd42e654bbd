"""One chaos round in the test suite: every process kind SIGKILLed under load, nothing lost."""

from __future__ import annotations

import os

import pytest

from tests.chaos.run import RoundPlan, run_round, summary
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1200)]


async def test_a_round_of_kills_loses_duplicates_and_resurrects_nothing(stack: Stack) -> None:
    plan = RoundPlan(writes=int(os.environ.get("REGIONSTORE_CHAOS_WRITES", "20000")))
    result = await run_round(stack, plan)
    report = summary([result])
    print(report)
    assert result.total_acknowledged >= plan.writes, report
    assert {k.process for k in result.kills} >= {"gateway", "writer", "kafka", "redis"}, report
    assert result.clean, report
