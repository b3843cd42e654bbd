"""Faults around the consumers: their groups growing and shrinking under load, Redis lost.

A second writer and a second replicator join the stack's consumer groups while customers keep
arriving, then members are killed: every rebalance takes partitions from a consumer that may
hold a batch of them, and none may exit over it or lose or duplicate a write. Redis, which only
keeps the region statuses, is killed and stopped under load: writes and reads go on, status
changes are refused with 503, no service restarts, and everyone resyncs when it is back.

Every acknowledged write must end exactly once in its home and replica regions: the audit counts
lost, duplicated, stale and resurrected customers, and all must be zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared.settings import CommonSettings
from regionstore_testing.ports import free_port
from tests.regionstore_env import Env, customer, env
from tests.stack import REPO_ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

SERVICES = ("gateway", "writer", "replicator", "recovery")
READY_WITHIN_S = 90.0
SETTLE_WITHIN_S = 180.0
POLL_S = 0.1
STATUS_STORE_DOWN = "node status store unavailable; the status was not changed"
# One zip per region, with a state of that region, so the load reaches all three.
PLACES = ((1310, "SP", "sao paulo"), (45000, "BA", "salvador"), (75000, "GO", "goiania"))


def _customers(count: int) -> list[dict[str, Any]]:
    places = itertools.islice(itertools.cycle(PLACES), count)
    return [customer(zip_prefix=z, state=s, city=c) for z, s, c in places]


async def _batch(env: Env, bodies: list[dict[str, Any]]) -> None:
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.status_code == 202, response.text
    for result in response.json()["results"]:
        assert result["status"] == "accepted", result
        env.remember(result)


@dataclass
class Load:
    """Batches of new customers posted one after another until stopped."""

    env: Env
    size: int = 200
    pause_s: float = 0.5
    posted: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                await _batch(self.env, _customers(self.size))
                await self._moved(self.size)
                # Pacing, not waiting for anything: a few hundred customers a second keep
                # every consumer busy without making the audit that follows take minutes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.pause_s):
                        await self.stop.wait()
        finally:
            self.ended = True
            await self._moved(0)

    async def _moved(self, posted: int) -> None:
        async with self.progress:
            self.posted += posted
            self.progress.notify_all()

    async def until_posted(self, task: asyncio.Task[None], count: int) -> None:
        """Wait until ``count`` customers are posted in all (or the load failed)."""
        async with asyncio.timeout(READY_WITHIN_S), self.progress:
            await self.progress.wait_for(lambda: self.posted >= count or self.ended)
        if self.ended:
            await task


def _log_file(path: Path) -> IO[bytes]:
    return path.open("wb")


@dataclass
class ExtraConsumer:
    """A writer or replicator process the test starts beside the stack's, in the same group."""

    service: str
    port: int
    log: Path
    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, stack: Stack, service: str, logs: Path) -> ExtraConsumer:
        """Start ``python -m regionstore_<service>`` with the stack's environment."""
        endpoints = stack.endpoints
        port = free_port()
        environment = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
            "REGIONSTORE_REDIS__URL": endpoints.redis_url,
            **{f"REGIONSTORE_STORES__{r.upper()}": uri for r, uri in endpoints.stores.items()},
            "REGIONSTORE_HTTP__PORT": str(port),
            "REGIONSTORE_SERVICE_NAME": f"{service}-extra",
        }
        log = logs / f"{service}-extra.log"
        with _log_file(log) as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"regionstore_{service}",
                cwd=REPO_ROOT,
                env=environment,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        return cls(service, port, log, process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def _ready(self) -> bool:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get("/readyz")).status_code == 200
        return False

    async def wait_applying(self) -> None:
        """Wait until it is ready and has applied (or parked) a batch of its own."""
        deadline = time.monotonic() + READY_WITHIN_S
        while not await self._applied_a_batch():
            assert self.alive, f"{self.service}-extra exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.service}-extra idle:\n{self.output()}"
            await asyncio.sleep(POLL_S)

    async def _applied_a_batch(self) -> bool:
        if not await self._ready():
            return False
        return any(
            line.startswith("regionstore_batch_apply_seconds_count") and float(line.split()[-1])
            for line in (await _metrics(self.url)).splitlines()
        )

    async def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop. Its exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
        return await self.process.wait()


async def _restarts(stack: Stack) -> dict[str, int]:
    processes = await stack.processes()
    return {name: int(processes[name]["restarts"]) for name in SERVICES}


async def _metrics(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=5, follow_redirects=True) as http:
        with contextlib.suppress(httpx.HTTPError):
            return (await http.get("/metrics")).text
    return ""


async def _owned(base_url: str) -> set[str]:
    """The command-topic partitions a consumer reports lag for: those it owns and consumed
    since its last rebalance (the gauges of revoked partitions are removed)."""
    lines = (await _metrics(base_url)).splitlines()
    return {
        match.group(1)
        for line in lines
        if line.startswith("regionstore_consumer_lag_messages{")
        and (match := re.search(r'partition="(\d+)"', line))
    }


async def _wait_owned(wanted: set[str], *consumers: str) -> None:
    """Wait until the consumers at these URLs own exactly ``wanted`` between them, each its
    own share: their group settled on them."""
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        shares = [await _owned(url) for url in consumers]
        if all(shares) and sum(map(len, shares)) == len(wanted) and set().union(*shares) == wanted:
            return
        assert time.monotonic() < deadline, f"partitions {shares}, want {wanted} between them"
        await asyncio.sleep(POLL_S * 5)


async def test_consumers_joining_and_dying_under_load_exit_on_nothing_and_lose_nothing(
    env: Env, stack: Stack, tmp_path: Path
) -> None:
    partitions = {str(p) for p in range(CommonSettings().kafka.partitions)}
    before = await _restarts(stack)
    load = Load(env)
    loading = asyncio.create_task(load.run())
    extras: list[ExtraConsumer] = []
    try:
        await load.until_posted(loading, 500)
        extras = [await ExtraConsumer.start(stack, s, tmp_path) for s in ("writer", "replicator")]
        extra_writer, extra_replicator = extras
        # Each one applying a batch of its own proves the groups rebalanced around it.
        await asyncio.gather(*(extra.wait_applying() for extra in extras))
        writer_pid = await stack.kill("writer")
        await extra_replicator.kill()
        await stack.wait_ready("writer", not_pid=writer_pid)
        # Keep the load on until both groups settled: the restarted writer joined, and the
        # killed replicator's partitions went back to the stack's after its session expired.
        services = stack.endpoints.services
        await _wait_owned(partitions, services["writer"], extra_writer.url)
        await _wait_owned(partitions, services["replicator"])
        # A member leaving cleanly is a rebalance too, with every other member busy.
        assert extra_writer.alive, extra_writer.output()[-3000:]
        assert await extra_writer.stop() == 0, extra_writer.output()[-3000:]
        await _wait_owned(partitions, services["writer"])
        await load.until_posted(loading, load.posted + 500)
        load.stop.set()
        await loading

        report = await env.settle(within_s=SETTLE_WITHIN_S)
        assert report.checked == load.posted
        assert report.clean, report
        assert await _restarts(stack) == {**before, "writer": before["writer"] + 1}
        assert "Traceback" not in extra_writer.output()
    finally:
        load.stop.set()
        if not loading.done():
            loading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await loading
        for extra in extras:
            await extra.stop()


@dataclass
class Probe:
    """Writes, reads and (while Redis is down) status changes, one after another."""

    env: Env
    redis_url: str
    readable: list[str]
    answers: list[tuple[str, bool, int, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        places = itertools.cycle(PLACES)
        async with Redis.from_url(self.redis_url, socket_connect_timeout=0.5) as redis:
            for turn in itertools.count():
                if self.stop.is_set():
                    return
                down = not await _answers(redis)
                zip_prefix, state, city = next(places)
                body = customer(zip_prefix=zip_prefix, state=state, city=city)
                written = await self.env.http.post("/v1/customers", json=body)
                self._note("write", down, written)
                if written.status_code == 202:
                    self.env.remember(written.json())
                one = self.readable[turn % len(self.readable)]
                self._note("read", down, await self.env.http.get(f"/v1/customers/{one}"))
                self._note("list", down, await self.env.http.get("/v1/customers?limit=5"))
                self._note("regions", down, await self.env.http.get("/v1/regions"))
                if not await _answers(redis):
                    # The status it has: should Redis be back already, this changes nothing.
                    changed = await self.env.http.put(
                        "/v1/regions/region_1/status", json={"status": "available"}
                    )
                    # Only a change sent and answered inside the outage must be refused.
                    self._note("status change", not await _answers(redis), changed)
                await asyncio.sleep(POLL_S / 2)

    def _note(self, kind: str, down: bool, response: httpx.Response) -> None:
        self.answers.append((kind, down, response.status_code, response.text[:300]))

    def while_down(self, kind: str) -> list[tuple[int, str]]:
        return [(code, text) for k, down, code, text in self.answers if k == kind and down]

    def failures(self) -> list[tuple[str, bool, int, str]]:
        wanted = {"write": 202, "read": 200, "list": 200, "regions": 200}
        return [a for a in self.answers if a[0] in wanted and a[2] != wanted[a[0]]]


async def _answers(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False


@contextlib.asynccontextmanager
async def _probing(env: Env, stack: Stack, readable: list[str]) -> AsyncIterator[Probe]:
    probe = Probe(env, stack.endpoints.redis_url, readable)
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        probe.stop.set()
        await task


async def _wait_redis(url: str, *, up: bool) -> None:
    async with Redis.from_url(url, socket_connect_timeout=0.5) as redis:
        deadline = time.monotonic() + READY_WITHIN_S
        while await _answers(redis) != up:
            assert time.monotonic() < deadline, f"redis never {'up' if up else 'down'}"
            await asyncio.sleep(POLL_S / 5)


async def _seeded(env: Env) -> list[str]:
    """A few customers written and applied before Redis goes: reads must find them."""
    bodies = _customers(6)
    await _batch(env, bodies)
    report = await env.settle()
    assert report.clean, report
    return [body["customer_id"] for body in bodies]


async def _sse_regions(env: Env, region: str, status: str) -> dict[str, Any]:
    """Wait for a region-list event in which ``region`` has ``status``; return it."""
    async with (
        asyncio.timeout(30),
        env.http.stream("GET", "/v1/regions/events") as events,
    ):
        async for line in events.aiter_lines():
            if not line.startswith("data:"):
                continue
            regions: dict[str, Any] = json.loads(line.removeprefix("data:"))
            if any(r["name"] == region and r["status"] == status for r in regions["regions"]):
                return regions
    raise AssertionError("the event stream ended")


async def _draining(stack: Stack) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{stack.endpoints.services['recovery']}/readyz")
    draining: list[str] = response.json().get("draining", [])
    return draining


async def test_redis_lost_under_load_keeps_writes_and_reads_and_refuses_status_changes(
    env: Env, stack: Stack
) -> None:
    redis_url = stack.endpoints.redis_url
    readable = await _seeded(env)
    before = await _restarts(stack)

    # A crash: process-compose brings Redis back within seconds.
    async with _probing(env, stack, readable) as crash:
        redis_pid = await stack.kill("redis")
        await stack.wait_ready("redis", not_pid=redis_pid)
        await _wait_redis(redis_url, up=True)
    assert crash.while_down("write"), "no write was made while Redis was down"
    assert crash.failures() == []

    # A window of ~10 s: stopped, then started again.
    async with _probing(env, stack, readable) as window:
        await stack.stop("redis")
        try:
            # The outage's length, not a wait for anything: the probe works all along.
            await asyncio.sleep(10)
            legacy = await env.http.post(
                "/node-status", json={"node_id": "region_2", "status": "unavailable"}
            )
        finally:
            await stack.start("redis", wait=False)
        # A change made the moment Redis is back, before the services reconnected: they were
        # cut off when it happened, so only their resync can show it to them.
        async with Redis.from_url(redis_url, decode_responses=True) as redis:
            await _wait_redis(redis_url, up=True)
            await redis.set(env.settings.redis.status_key("region_3"), "unavailable")
        await stack.wait_ready("redis")
    assert window.failures() == []
    changes = window.while_down("status change")
    assert changes, "no status change was tried while Redis was down"
    assert all(code == 503 and STATUS_STORE_DOWN in text for code, text in changes), changes
    assert legacy.status_code == 503, legacy.text
    assert STATUS_STORE_DOWN in legacy.json()["detail"]
    assert len(window.while_down("write")) >= 10

    try:
        # The gateway's event stream, recovery and the writer all see region_3 unavailable.
        await _sse_regions(env, "region_3", "unavailable")
        deadline = time.monotonic() + 30
        while "region_3" in await _draining(stack):
            assert time.monotonic() < deadline, "recovery still drains region_3"
            await asyncio.sleep(POLL_S)
        homed_there = [customer(zip_prefix=75000 + i, state="GO") for i in range(20)]
        parked_before = (await env.pending())["region_3"] or 0
        await _batch(env, homed_there)
        assert await env.wait_pending("region_3", at_least=parked_before + 20) >= (
            parked_before + 20
        )
    finally:
        await env.set_status("region_3", "available")
    assert (await env.http.get("/v1/regions")).status_code == 200

    report = await env.settle(within_s=SETTLE_WITHIN_S)
    assert report.clean, report
    assert await _restarts(stack) == before
