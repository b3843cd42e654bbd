"""Every query the gateway makes against the regional stores."""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymongo
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from regionstore_shared import metrics
from regionstore_shared.apply import Collection, Suspicion
from regionstore_shared.documents import (
    CITY_KEY,
    COMMAND_ID,
    DELETED,
    HOME,
    POSITION,
    VERSION,
    holds_write,
)
from regionstore_shared.failures import describe
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import fold_text
from regionstore_shared.status import NodeStatus

log = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")
ID_INDEX = "_id_"
DEADLINE_EXCEEDED = "DeadlineExceeded"
"""The ``kind`` of ``regionstore_store_errors_total`` for a region read that ran out of time."""
BACKSTOP_GRACE_S = 0.05
"""How long after the driver's deadline the asyncio one cancels a read the driver let run on."""


@dataclass(frozen=True, slots=True)
class Found:
    """A document and the region that served it."""

    document: Document
    served_by: str

    @property
    def deleted(self) -> bool:
        """Whether the document is a tombstone."""
        return bool(self.document.get(DELETED))

    @property
    def version(self) -> int:
        """The version that wrote it."""
        return int(self.document[VERSION])

    @property
    def moved(self) -> bool:
        """A tombstone saying the customer lives in another region, not that it was deleted."""
        return self.deleted and self.home is not None

    @property
    def home(self) -> str | None:
        """The customer's home region (absent on a delete's tombstones)."""
        home = self.document.get(HOME)
        return str(home) if home is not None else None


@dataclass(slots=True)
class Lookup:
    """The newest state of some customers across the regions that could be read."""

    newest: dict[str, Found] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class CustomerFilter:
    """A validated list query."""

    zip_min: int | None = None
    zip_max: int | None = None
    city: str | None = None
    state: str | None = None
    region: str | None = None

    def mongo(self, home: str, after: str | None) -> Document:
        """The store filter for one home region's share of the query."""
        query: Document = {HOME: home, DELETED: False}
        if after is not None:
            query["_id"] = {"$gt": after}
        zip_range: Document = {}
        if self.zip_min is not None:
            zip_range["$gte"] = self.zip_min
        if self.zip_max is not None:
            zip_range["$lte"] = self.zip_max
        if zip_range:
            query["customer_zip_code_prefix"] = zip_range
        if self.city:
            # Anchored and escaped: user text is never a pattern of its own.
            query[CITY_KEY] = {"$regex": f"^{re.escape(fold_text(self.city))}"}
        if self.state:
            query["customer_state"] = self.state
        return query

    @property
    def by_field(self) -> bool:
        """Whether a field (zip, city, state) narrows the query, beyond region and liveness."""
        return self.zip_min is not None or self.zip_max is not None or bool(self.city or self.state)


@dataclass(slots=True)
class Page:
    """One page of a fan-out query and what it could not see."""

    rows: list[Found]
    more: bool
    degraded: list[str]
    unreachable: list[str]


def missed_deadline(error: BaseException) -> bool:
    """Whether a region read failed for want of time: the region is slow, not known to be out.

    The asyncio backstop ends in TimeoutError; the driver's own deadline in a timeout error
    (ExecutionTimeout, NetworkTimeout, WaitQueueTimeoutError). A server-selection timeout is
    not slowness: no server of the region could be found, which is the outage path.
    """
    if isinstance(error, TimeoutError):
        return True
    return (
        isinstance(error, PyMongoError)
        and error.timeout
        and not isinstance(error, ServerSelectionTimeoutError)
    )


def _fresher(found: Found, held: Found) -> bool:
    """Newer version first; at one version a live copy, and the home copy, win over others.

    One command writes the record and its tombstones elsewhere at the same version.
    """
    if found.version != held.version:
        return found.version > held.version
    if found.deleted != held.deleted:
        return not found.deleted
    return found.home == found.served_by


class CustomerRepository:
    """Reads customers from the regional stores, falling back to replicas.

    Every region read has ``read_deadline_s``: a region that misses it counts as not read, so
    a list share falls back to the replica (degraded) and a point lookup answers from the
    regions that did answer. A missed deadline does not hold the region suspect: the deadline
    already bounds what a slow region costs each read, and a slow answer may be the query's
    doing (a page over many matches), not the region's, so one heavy query must not take a
    region out of every other read. A region that fails outright is held suspect as before.
    """

    def __init__(
        self,
        collections: Mapping[str, Collection],
        regions: RegionMap,
        suspicion: Suspicion,
        *,
        read_deadline_s: float,
    ) -> None:
        self._collections = collections
        self._regions = regions
        self._suspicion = suspicion
        self._deadline_s = read_deadline_s

    async def _bounded(self, read: Awaitable[T]) -> T:
        """Await one region read within the read deadline.

        The driver's deadline (``pymongo.timeout``) normally ends a slow read: it also sends
        ``maxTimeMS``, so the store stops working on a read nobody waits for, and it bounds
        server selection and connection checkout. The asyncio deadline just after it is the
        backstop for any await the driver does not bound; a driver operation cancelled that
        way closes its connection rather than returning it to the pool.
        """
        async with asyncio.timeout(self._deadline_s + BACKSTOP_GRACE_S):
            with pymongo.timeout(self._deadline_s):
                return await read

    def _readable(self, region: str, statuses: Mapping[str, NodeStatus]) -> bool:
        return statuses.get(
            region
        ) is not NodeStatus.UNAVAILABLE and not self._suspicion.is_suspect(region)

    async def lookup(self, customer_id: str, statuses: Mapping[str, NodeStatus]) -> Lookup:
        """The newest document of a customer among every readable region."""
        readable = [r for r in self._regions.names if self._readable(r, statuses)]
        results = await asyncio.gather(
            *(self._bounded(self._collections[r].find_one({"_id": customer_id})) for r in readable),
            return_exceptions=True,
        )
        lookup = Lookup(unreachable={r for r in self._regions.names if r not in readable})
        for region, result in zip(readable, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, PyMongoError | TimeoutError):
                    raise result
                self._read_failed(region, result)
                lookup.unreachable.add(region)
                continue
            if result is None:
                continue
            found = Found(result, region)
            held = lookup.newest.get(customer_id)
            if held is None or _fresher(found, held):
                lookup.newest[customer_id] = found
        return lookup

    def covered(self, unreachable: set[str]) -> bool:
        """Whether every region's customers could still be seen in it or one of its replicas."""
        return all(
            region not in unreachable
            or any(r not in unreachable for r in self._regions.fallbacks_for(region))
            for region in self._regions.names
        )

    async def holds(self, region: str, customer_id: str, command_id: str, position: int) -> bool:
        """Whether a region holds the write of ``command_id`` (at ``position`` in the command
        topic) or one acknowledged after it (:func:`~regionstore_shared.documents.holds_write`).

        A read that misses the deadline has not seen it (yet); other store errors propagate.
        """
        read = self._collections[region].find_one(
            {"_id": customer_id}, {COMMAND_ID: 1, POSITION: 1}
        )
        try:
            document = await self._bounded(read)
        except (PyMongoError, TimeoutError) as error:
            if not missed_deadline(error):
                raise
            self._read_failed(region, error)
            return False
        return document is not None and holds_write(document, command_id, position)

    async def page(
        self,
        query: CustomerFilter,
        statuses: Mapping[str, NodeStatus],
        *,
        after: str | None,
        limit: int,
    ) -> Page:
        """One page of customers ordered by id, each region's share read where it can be."""
        homes = [
            r
            for r in self._regions.regions_for_zip_range(query.zip_min, query.zip_max)
            if query.region is None or r == query.region
        ]
        shares = await asyncio.gather(
            *(self._share(home, query, statuses, after, limit + 1) for home in homes)
        )
        degraded = [
            home
            for home, (rows, source) in zip(homes, shares, strict=True)
            if source is not None and source != home
        ]
        unreachable = [
            home for home, (_, source) in zip(homes, shares, strict=True) if source is None
        ]
        merged = list(heapq.merge(*(rows for rows, _ in shares), key=lambda f: f.document["_id"]))
        return Page(merged[:limit], len(merged) > limit, degraded, unreachable)

    async def _share(
        self,
        home: str,
        query: CustomerFilter,
        statuses: Mapping[str, NodeStatus],
        after: str | None,
        limit: int,
    ) -> tuple[list[Found], str | None]:
        for source in (home, *self._regions.fallbacks_for(home)):
            if not self._readable(source, statuses):
                continue
            try:
                rows = await self._bounded(self._find(source, home, query, after, limit))
            except (PyMongoError, TimeoutError) as error:
                self._read_failed(source, error)
                continue
            return [Found(doc, source) for doc in rows], source
        return [], None

    async def _find(
        self, source: str, home: str, query: CustomerFilter, after: str | None, limit: int
    ) -> list[Document]:
        cursor = (
            self._collections[source].find(query.mongo(home, after)).sort("_id", 1).limit(limit)
        )
        if not query.by_field:
            # A region's live customers are a large share of its documents, so walking the
            # `_id` index in order finds a page after a few reads; a store's planner may prefer
            # a secondary index and then sort every live customer.
            cursor = cursor.hint(ID_INDEX)
        return [doc async for doc in cursor]

    def _read_failed(self, region: str, error: PyMongoError | TimeoutError) -> None:
        """Count a failed region read; hold the region suspect only when it is out, not slow."""
        if missed_deadline(error):
            metrics.STORE_ERRORS.labels(region=region, kind=DEADLINE_EXCEEDED).inc()
            log.warning(
                "region read missed its deadline",
                extra={
                    "region": region,
                    "deadline_ms": round(self._deadline_s * 1000),
                    "error": describe(error)[:300],
                },
            )
            return
        self._suspicion.suspect(region)
        metrics.STORE_ERRORS.labels(region=region, kind=type(error).__name__).inc()
        log.warning("region read failed", extra={"region": region, "error": str(error)[:300]})
