"""A chaos round on the compose deployment: every kind of container is ``docker kill``ed under
load (a service, recovery mid-drain, a broker, both Redis, a region's store) and the audit of
every acknowledged write is clean.

The whole round (``make test-docker``) kills every region's store, under at least 3,000 writes,
recovery once 3,000 commands are parked. CI's short one (``make test-docker-ci``:
``REGIONSTORE_DOCKER_ROUND=short``) kills each kind once, one region's store drawn from the
round's seed, under at least 1,000 writes, recovery once 1,000 are parked (the drain still
takes several batches, so the kill lands in it), and proves the same.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import pytest

from regionstore_shared.settings import CommonSettings
from tests.chaos import faults
from tests.chaos.run import RoundPlan, run_round, summary
from tests.chaos.verify import check_topic, end_offsets
from tests.docker.containers import ContainerStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(1200)]

REGIONS = ("region_1", "region_2", "region_3")


@dataclass(frozen=True, slots=True)
class Size:
    """How big a round is: writes at least, commands parked before recovery is killed, and
    whether one store is killed or all."""

    writes: int
    parked: int
    one_store: bool


SIZES = {
    "full": Size(writes=3000, parked=faults.PARK_AT_LEAST, one_store=False),
    "short": Size(writes=1000, parked=1000, one_store=True),
}


async def test_killed_containers_lose_and_overtake_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = SIZES[os.environ.get("REGIONSTORE_DOCKER_ROUND", "full")]
    # REGIONSTORE_CHAOS_SEED replays a round's order of kills, and the short round's store
    # (its seed is in the report).
    chosen = os.environ.get("REGIONSTORE_CHAOS_SEED")
    seed = int(chosen) if chosen else random.randrange(2**32)
    plan = RoundPlan(
        writes=int(os.environ.get("REGIONSTORE_CHAOS_WRITES", str(size.writes))),
        clients=8,
        pause_s=1.0,
        seed=seed,
    )
    stores = (random.Random(f"{seed}:store").choice(REGIONS),) if size.one_store else None
    stack = ContainerStack(stores=stores)
    monkeypatch.setattr(faults, "PARK_AT_LEAST", size.parked)
    kafka = CommonSettings().kafka
    dead_letters_before = await end_offsets(kafka, kafka.deadletter_topic)

    result = await run_round(stack, plan)

    report = summary([result])
    print(report)
    # A dead-lettered command of the round is an acknowledged write some region never took:
    # the audit would call it lost or overtaken, this says why.
    dead = await check_topic(kafka, dead_letters_before, result.prefix, {}, {})
    assert result.total_acknowledged >= plan.writes, report
    # Every kind of container, each once.
    assert sorted(k.process for k in result.kills) == sorted(await stack.processes()), report
    assert dead.commands == 0, f"{dead.commands} commands of the round dead-lettered\n{report}"
    assert result.clean, report
