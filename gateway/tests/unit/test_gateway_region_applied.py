"""The region list's ``applied`` totals: read from Redis, unknown (null) while it is down."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, cast

import pytest

from regionstore_gateway.adapters.status_history import RecentChanges
from regionstore_gateway.bodies import RegionList
from regionstore_gateway.services.regions import region_list
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.applied_totals import AppliedTotals
from regionstore_shared.status import StatusBoard
from shared.tests.fakes import FakeRedis

APPLIED = "regionstore:applied"


class FakeBacklog:
    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]:
        return dict.fromkeys(regions, 0)

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]:
        return dict.fromkeys(groups, 0)


class Regions:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.redis = FakeRedis()
        self.now = 100.0
        self.board = StatusBoard(
            cast(Any, self.redis),
            settings.redis,
            settings.region_map.names,
            clock=lambda: self.now,
        )
        self.totals = AppliedTotals(cast(Any, self.redis), settings.redis.applied_key)
        self.recent = RecentChanges(keep=5)

    async def listed(self) -> RegionList:
        return await region_list(
            self.settings, self.board, cast(Any, FakeBacklog()), self.totals, self.recent
        )

    async def applied(self) -> dict[str, int | None]:
        return {region.name: region.applied for region in (await self.listed()).regions}


@pytest.fixture
def regions(monkeypatch: pytest.MonkeyPatch) -> Regions:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return Regions(GatewaySettings())


class TestAppliedTotals:
    async def test_each_region_carries_its_total(self, regions: Regions) -> None:
        regions.redis.hashes[APPLIED] = {"region_1": 1200, "region_3": 7}
        assert await regions.applied() == {"region_1": 1200, "region_2": 0, "region_3": 7}

    async def test_the_field_is_in_the_json_the_console_reads(self, regions: Regions) -> None:
        regions.redis.hashes[APPLIED] = {"region_2": 42}
        dumped = (await regions.listed()).model_dump(mode="json")
        assert [r["applied"] for r in dumped["regions"]] == [0, 42, 0]

    async def test_unknown_while_redis_is_down_and_not_asked_twice(self, regions: Regions) -> None:
        regions.redis.down = True
        assert await regions.applied() == dict.fromkeys(("region_1", "region_2", "region_3"))
        # The status read already failed: the list does not wait on Redis a second time.
        assert regions.redis.calls == 1

    async def test_known_again_once_redis_is_back(self, regions: Regions) -> None:
        regions.redis.down = True
        await regions.applied()
        regions.redis.down = False
        regions.now += 2  # past the board's retry interval
        regions.redis.hashes[APPLIED] = {"region_1": 5}
        assert (await regions.applied())["region_1"] == 5
