"""The chaos rounds of the test suite: every process kind SIGKILLed under load (`make test
PYTEST_ARGS='-m kills'`, and `make chaos`), and a seeded mix of link faults, pauses, clock steps
(a gateway's, a writer's and a replicator's), a full disk, a wiped region and those kills on a
stack with its Toxiproxy links (`make test-links`, in `make test`); nothing lost, nothing
overtaken, the wiped region repaired whole."""

from __future__ import annotations

import os

import pytest

from tests.chaos.nemesis import KINDS
from tests.chaos.run import RoundPlan, run_round, summary
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1500)]


@pytest.mark.kills
async def test_a_round_of_kills_and_a_skewed_clock_loses_and_overtakes_nothing(
    stack: Stack,
) -> None:
    # Clients spread over the stack's gateway and one whose clock is 30 ms behind: a write
    # acknowledged after another must still win over it.
    plan = RoundPlan(
        writes=int(os.environ.get("REGIONSTORE_CHAOS_WRITES", "20000")),
        skews=("-30ms",),
        random_faults=0,
    )
    result = await run_round(stack, plan)
    report = summary([result])
    print(report)
    assert result.total_acknowledged >= plan.writes, report
    assert {k.process for k in result.kills} >= {"gateway", "writer", "kafka", "redis"}, report
    assert result.clean, report


@pytest.mark.links
async def test_a_mixed_round_of_faults_and_a_skewed_clock_loses_and_overtakes_nothing(
    stack: Stack,
) -> None:
    # Clients spread over the stack's gateway (through its link), one whose clock is 30 ms
    # behind, and one whose clock the nemesis steps (as it steps a second writer's): a write
    # acknowledged after another must still win over it. One region's disk fills, and one
    # region is wiped and repaired before the audit. REGIONSTORE_CHAOS_SEED replays a round
    # (its seed is in the report).
    seed = os.environ.get("REGIONSTORE_CHAOS_SEED")
    plan = RoundPlan(
        writes=int(os.environ.get("REGIONSTORE_CHAOS_WRITES", "20000")),
        skews=("-30ms",),
        kinds=KINDS,
        seed=int(seed) if seed else None,
        random_faults=int(os.environ.get("REGIONSTORE_CHAOS_FAULTS", "4")),
    )
    result = await run_round(stack, plan)
    report = summary([result])
    print(report)
    assert result.total_acknowledged >= plan.writes, report
    assert {k.process for k in result.kills} >= {"gateway", "writer", "kafka", "redis"}, report
    assert len(result.faults) == len(result.kills) + plan.random_faults + 2, report
    kinds = [f.fault.kind for f in result.happened]
    assert kinds.count("wipe") == kinds.count("disk") == 1, report
    assert result.repaired_whole, report
    assert result.clean, report
