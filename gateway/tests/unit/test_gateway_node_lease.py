"""The leased clock node id: versions carry the id held, and no id means no version."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import LockError
from test_gateway_redis_down import Gateway, _body

from regionstore_gateway.adapters.node_lease import LeasedClock, NodeIdLease, NoNodeIdError
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clock import NODE_BITS

TTL_S = 15.0


class Locks:
    """Redis locks as a dict of name to owner, enough for ``Redis.lock``."""

    def __init__(self) -> None:
        self.owners: dict[str, object] = {}

    def lock(self, name: str, *, timeout: float, blocking: bool) -> FakeLock:
        assert blocking is False
        assert timeout == TTL_S
        return FakeLock(self, name)


class FakeLock:
    def __init__(self, locks: Locks, name: str) -> None:
        self._locks = locks
        self.name = name

    async def acquire(self) -> bool:
        return self._locks.owners.setdefault(self.name, self) is self

    async def reacquire(self) -> bool:
        if self._locks.owners.get(self.name) is not self:
            raise LockError("not owned")
        return True

    async def release(self) -> None:
        if self._locks.owners.get(self.name) is self:
            del self._locks.owners[self.name]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lease(locks: Locks, clock: Clock) -> NodeIdLease:
    return NodeIdLease(cast(Any, locks), prefix="ids:", ttl_s=TTL_S, clock=clock)


async def test_the_id_is_held_until_the_ttl_lapses_without_a_renewal() -> None:
    clock = Clock()
    held = lease(Locks(), clock)
    node_id = await held.acquire()
    clock.now += TTL_S - 0.01
    assert held.node_id == node_id
    clock.now += 0.02
    with pytest.raises(NoNodeIdError):
        _ = held.node_id
    await held.renew()
    assert held.node_id == node_id


async def test_versions_carry_the_id_held_and_keep_rising_when_it_changes() -> None:
    locks, clock = Locks(), Clock()
    held = lease(locks, clock)
    first_id = await held.acquire()
    leased = LeasedClock(held)
    before = leased.now()
    assert before & ((1 << NODE_BITS) - 1) == first_id
    locks.owners[f"ids:{first_id}"] = "another process"
    await held.renew()
    after = leased.now()
    assert held.node_id != first_id
    assert after & ((1 << NODE_BITS) - 1) == held.node_id
    assert after > before


async def test_two_leases_never_hold_the_same_id_and_all_held_refuses() -> None:
    locks, clock = Locks(), Clock()
    ids = {await lease(locks, clock).acquire() for _ in range(64)}
    assert ids == set(range(64))
    with pytest.raises(NoNodeIdError):
        await lease(locks, clock).acquire()


async def test_a_write_without_an_id_is_refused_and_nothing_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    clock = Clock()
    held = lease(Locks(), clock)
    await held.acquire()
    gateway = Gateway(GatewaySettings(), clock=LeasedClock(held))
    async with gateway.client() as client:
        accepted = await client.post("/v1/customers", json=_body())
        assert accepted.status_code == 202, accepted.text
        clock.now += TTL_S
        refused = await client.post("/v1/customers", json=_body())
    assert refused.status_code == 503
    assert "clock node id" in refused.json()["detail"]
    assert "Retry-After" in refused.headers
    assert len(gateway.producer.sent) == 1


def test_auto_is_a_node_id_setting_and_other_words_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGIONSTORE_NODE_ID", "auto")
    assert GatewaySettings().node_id == "auto"
    monkeypatch.setenv("REGIONSTORE_NODE_ID", "64")
    with pytest.raises(ValueError, match="node_id"):
        GatewaySettings()


def lapses() -> float:
    return REGISTRY.get_sample_value("regionstore_node_id_lease_lapses_total") or 0.0


async def test_a_lapse_is_counted_once_and_the_gauge_says_whether_an_id_is_held() -> None:
    clock = Clock()
    held = lease(Locks(), clock)
    await held.acquire()
    held.start()
    try:
        before = lapses()
        assert REGISTRY.get_sample_value("regionstore_node_id_held") == 1.0
        clock.now += TTL_S
        assert REGISTRY.get_sample_value("regionstore_node_id_held") == 0.0
        with pytest.raises(NoNodeIdError):
            _ = held.node_id
        assert lapses() - before == 1
        await held.renew()
        assert REGISTRY.get_sample_value("regionstore_node_id_held") == 1.0
        assert lapses() - before == 1
    finally:
        await held.close()


async def test_a_lease_found_taken_is_a_lapse() -> None:
    locks, clock = Locks(), Clock()
    held = lease(locks, clock)
    node_id = await held.acquire()
    before = lapses()
    locks.owners[f"ids:{node_id}"] = "another process"
    await held.renew()
    assert lapses() - before == 1
    assert held.node_id != node_id


async def test_giving_the_id_back_is_not_a_lapse() -> None:
    held = lease(Locks(), Clock())
    await held.acquire()
    before = lapses()
    await held.close()
    assert not held.holds()
    assert lapses() == before
