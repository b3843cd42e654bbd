"""The failure detector's loop: one leader per deployment probes the stores, reads what the
services reported, and changes statuses through the audit trail.

**One detector per deployment, not an agreement between processes.** Every recovery process
runs this loop, but only the one holding a Redis lease acts; the others wait to take over.
Statuses already live in one place (Redis), so one writer that sees every process's reports
needs no consensus protocol, and two detectors can never flap a region between them (as two
gateways deciding from their own reads could). Each change is written only if the lease is
still held and nobody changed the status since it was read, in one atomic step
(:meth:`~regionstore_shared.status.StatusBoard.transition`): a detector that lost its lease
while paused cannot write a stale decision. While Redis is unreachable nobody holds the lease
and nothing changes; statuses could not be changed anyway.

Every change is recorded in the audit trail before it is made, like an operator's; a trail that
cannot be written leaves the status as it is until the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

import pymongo
from prometheus_client import Counter
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_recovery.detector import Decision, Detector
from regionstore_shared.audit_trail import (
    DETECTOR,
    AuditAction,
    AuditEvent,
    AuditUnavailableError,
    new_event,
)
from regionstore_shared.documents import Collection
from regionstore_shared.failures import describe
from regionstore_shared.status import RegionStatus, StatusRecord, Transition

log = logging.getLogger(__name__)

CHANGES = Counter(
    "regionstore_detector_changes_total",
    "Region statuses the failure detector changed, by region and new status.",
    ["region", "status"],
)
PROBE_FAILURES = Counter(
    "regionstore_detector_probe_failures_total",
    "Probes of a region's store that failed or missed their deadline.",
    ["region"],
)

# A point read of an id no customer has: it walks the same index and table every write does.
PROBE_ID = "__regionstore_probe__"

# Lease: take it if free, else keep it if ours. KEYS: the lease. ARGV: our token, its TTL in ms.
_HOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """The detector's lease in Redis: held by at most one process, renewed every round."""

    def __init__(self, redis: Redis, key: str, ttl_s: float) -> None:
        self._redis = redis
        self.key = key
        self.token = uuid.uuid4().hex
        self._ttl_ms = round(ttl_s * 1000)

    async def hold(self) -> bool:
        """Take the lease or renew ours; False when another process holds it or Redis fails."""
        try:
            held = await self._redis.eval(_HOLD, 1, self.key, self.token, str(self._ttl_ms))
        except RedisError as error:
            log.debug("detector lease not renewed", extra={"error": str(error)})
            return False
        return bool(held)

    async def release(self) -> None:
        """Give the lease up, so another process takes over at once rather than at its TTL."""
        with contextlib.suppress(RedisError):
            await self._redis.eval(_RELEASE, 1, self.key, self.token)


class StoreProbe:
    """A cheap point read of every region's store within a deadline."""

    def __init__(self, collections: Mapping[str, Collection], timeout_s: float) -> None:
        self._collections = collections
        self._timeout_s = timeout_s

    async def probe(self, regions: Iterable[str]) -> dict[str, str | None]:
        """Per region, None when its store answered in time, else what went wrong."""
        names = list(regions)
        results = await asyncio.gather(*(self._probe(r) for r in names))
        return dict(zip(names, results, strict=True))

    async def _probe(self, region: str) -> str | None:
        try:
            # The driver's deadline, and an asyncio one just after it for any wait the driver
            # does not bound (a frozen store's socket).
            async with asyncio.timeout(self._timeout_s + 0.25):
                with pymongo.timeout(self._timeout_s):
                    await self._collections[region].find_one({"_id": PROBE_ID}, {"_id": 1})
        except TimeoutError:
            PROBE_FAILURES.labels(region=region).inc()
            return f"no answer within {self._timeout_s:g} s"
        except PyMongoError as error:
            PROBE_FAILURES.labels(region=region).inc()
            return describe(error)[:200]
        return None


class Statuses(Protocol):
    """What the loop needs of the status board."""

    async def read_records(self) -> dict[str, StatusRecord]: ...

    async def transition(
        self,
        region: str,
        seen: StatusRecord,
        status: RegionStatus,
        reason: str,
        *,
        lease_key: str,
        lease_token: str,
    ) -> Transition: ...


class Reports(Protocol):
    """The services' reports (see :class:`~regionstore_shared.health.HealthFeed`)."""

    def forget(self) -> None: ...

    async def read(self) -> list[tuple[str, str]]: ...


class Probe(Protocol):
    async def probe(self, regions: Iterable[str]) -> dict[str, str | None]: ...


class Leadership(Protocol):
    key: str
    token: str

    async def hold(self) -> bool: ...


class Trail(Protocol):
    async def record(self, event: AuditEvent) -> None: ...

    def follow_up(
        self, event: AuditEvent, outcome: Literal["failed", "unknown"], error: BaseException
    ) -> None: ...


class DetectionLoop:
    """One round per probe interval: hold the lease, read, probe, decide, act."""

    def __init__(
        self,
        detector: Detector,
        *,
        statuses: Statuses,
        reports: Reports,
        probe: Probe,
        lease: Leadership,
        trail: Trail,
    ) -> None:
        self._detector = detector
        self._statuses = statuses
        self._reports = reports
        self._probe = probe
        self._lease = lease
        self._trail = trail
        self.leading = False

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Go round until ``stop``, one round starting every ``interval_s`` (a round whose
        probes wait out their deadline is not followed by a whole interval more)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            next_at = loop.time() + interval_s
            try:
                await self.round()
            except Exception:
                # Whatever went wrong, recovery's drains must not stop with the detector.
                log.exception("detector round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_at):
                    await stop.wait()

    async def round(self) -> None:
        """One round; never raises for Redis, a store or the trail failing."""
        if not await self._lease.hold():
            if self.leading:
                log.warning("detector lease lost; another process detects now")
            self.leading = False
            self._detector.forget()
            self._reports.forget()
            return
        if not self.leading:
            log.info("detector lease taken; this process detects failures")
            self.leading = True
        try:
            records = await self._statuses.read_records()
            reports = await self._reports.read()
        except RedisError as error:
            log.debug("detector round skipped", extra={"error": str(error)})
            return
        probed = await self._probe.probe(
            r for r, record in records.items() if record.status is not RegionStatus.UNAVAILABLE
        )
        for region, record in records.items():
            self._detector.observe(region, record)
            for source in (s for r, s in reports if r == region):
                self._detector.reported(region, source)
            if region in probed:
                self._detector.probed(region, probed[region])
            decision = self._detector.decide(region, record)
            if decision is not None:
                await self._act(region, record, decision)

    async def _act(self, region: str, record: StatusRecord, decision: Decision) -> None:
        event = new_event(
            DETECTOR,
            AuditAction.REGION_STATUS,
            region,
            {"status": decision.status.value, "reason": decision.reason},
        )
        try:
            await self._trail.record(event)
        except AuditUnavailableError as error:
            log.warning(
                "detector change not made: the audit trail cannot be written",
                extra={"region": region, "status": decision.status.value, "error": str(error)},
            )
            return
        try:
            outcome = await self._statuses.transition(
                region,
                record,
                decision.status,
                decision.reason,
                lease_key=self._lease.key,
                lease_token=self._lease.token,
            )
        except RedisError as error:
            self._trail.follow_up(event, "unknown", error)
            return
        if outcome is not Transition.DONE:
            self._trail.follow_up(event, "failed", RuntimeError(outcome.value))
            return
        self._detector.changed(region, decision)
        CHANGES.labels(region=region, status=decision.status.value).inc()
        log.warning(
            "region %s %s",
            region,
            "detected down" if decision.status is RegionStatus.DOWN else "detected back",
            extra={"region": region, "status": decision.status.value, "reason": decision.reason},
        )
