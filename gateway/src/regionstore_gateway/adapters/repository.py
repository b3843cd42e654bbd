"""Every query the gateway makes against the regional stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymongo
from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError

from regionstore_gateway.adapters.list_order import Key, Order, Plan, Walk, merge, plans
from regionstore_shared import metrics
from regionstore_shared.apply import Suspicion
from regionstore_shared.documents import (
    COMMAND_ID,
    DELETED,
    HOME,
    POSITION,
    VERSION,
    Collection,
    holds_write,
)
from regionstore_shared.failures import describe
from regionstore_shared.regions import RegionMap
from regionstore_shared.status import NodeStatus

log = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")
BAD_VALUE = 2
"""The store's error code for a hint naming an index it does not have (among other things)."""
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
    unique_id: str | None = None

    def plans(self) -> list[Plan]:
        """How this filter's pages may walk the stores, the default first."""
        return plans(
            zip_min=self.zip_min,
            zip_max=self.zip_max,
            city=self.city,
            state=self.state,
            unique_id=self.unique_id,
        )


@dataclass(slots=True)
class Page:
    """One page of a fan-out query, where the next one starts, and what it could not see."""

    rows: list[Found]
    next_after: Key | None
    """The key the next page starts after; None when this page ends the list."""
    order: Order
    degraded: list[str]
    unreachable: list[str]
    examined: int = 0
    """The most index entries one home's walk read for this page (at least)."""


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


def _better(page: Page) -> tuple[bool, bool, int]:
    """How a trial page ranks: every region read (an unread one is not the list's end), then
    the list's end reached, then the most rows."""
    return (not page.unreachable, page.next_after is None, len(page.rows))


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
        budget_factor: int = 10,
    ) -> None:
        self._collections = collections
        self._budget_factor = budget_factor
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

    async def copies(
        self,
        *,
        customer_ids: Sequence[str],
        unique_id: str | None,
        statuses: Mapping[str, NodeStatus],
    ) -> tuple[dict[str, list[Document]], set[str]]:
        """Every region's documents of these customers, tombstones included, and of every live
        customer of ``unique_id``; and the regions that could not be read (an export says so)."""
        readable = [r for r in self._regions.names if self._readable(r, statuses)]
        ors: list[dict[str, Any]] = [{"_id": {"$in": list(customer_ids)}}]
        if unique_id is not None:
            ors.append({"customer_unique_id": unique_id})
        results = await asyncio.gather(
            *(self._bounded(self._collections[r].find({"$or": ors}).to_list()) for r in readable),
            return_exceptions=True,
        )
        unreachable = {r for r in self._regions.names if r not in readable}
        copies: dict[str, list[Document]] = {}
        for region, result in zip(readable, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, PyMongoError | TimeoutError):
                    raise result
                self._read_failed(region, result)
                unreachable.add(region)
                continue
            copies[region] = sorted(result, key=lambda d: str(d["_id"]))
        return copies, unreachable

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
        after: Key | None,
        limit: int,
        order: Order | None = None,
    ) -> Page:
        """One page of customers in the filter's order, each region's share read where it can be.

        Each home's share is a walk of the filter's index (list_order.py) for ``limit + 1`` rows,
        so a full share shows the page has more; the shares merge in order. ``order`` is the
        one the listing's first page took (from its cursor). The first page of a filter that
        may walk two ways walks both, concurrently, and keeps the better page (``_better``;
        on a tie, the default). That trial is the statistic: it cannot be stale, and costs the
        first page only.
        """
        homes = [
            r
            for r in self._regions.regions_for_zip_range(query.zip_min, query.zip_max)
            if query.region is None or r == query.region
        ]
        candidates = query.plans()
        if order is not None:
            candidates = [c for c in candidates if c.order is order]
        pages = await asyncio.gather(
            *(self._walked(walk, homes, statuses, after, limit) for walk in candidates)
        )
        return max(pages, key=_better)

    async def _walked(
        self,
        walk: Plan,
        homes: list[str],
        statuses: Mapping[str, NodeStatus],
        after: Key | None,
        limit: int,
    ) -> Page:
        shares = await asyncio.gather(
            *(self._share(home, walk, statuses, after, limit + 1) for home in homes)
        )
        degraded = [
            home
            for home, (_, source) in zip(homes, shares, strict=True)
            if source is not None and source != home
        ]
        unreachable = [
            home for home, (_, source) in zip(homes, shares, strict=True) if source is None
        ]
        read = [share for share, _ in shares]
        merged = merge(read, lambda found: walk.order.key(found.document), limit)
        return Page(
            rows=merged.rows,
            next_after=merged.next_after,
            order=walk.order,
            degraded=degraded,
            unreachable=unreachable,
            examined=max((share.examined for share in read), default=0),
        )

    async def _share(
        self,
        home: str,
        walk: Plan,
        statuses: Mapping[str, NodeStatus],
        after: Key | None,
        want: int,
    ) -> tuple[Walk[Found], str | None]:
        for source in (home, *self._regions.fallbacks_for(home)):
            if not self._readable(source, statuses):
                continue
            try:
                share = await self._bounded(self._walk(source, home, walk, after, want))
            except (PyMongoError, TimeoutError) as error:
                self._read_failed(source, error)
                continue
            rows = [Found(doc, source) for doc in share.rows]
            return Walk(rows, share.reach, share.examined), source
        return Walk([], None, 0), None

    async def _walk(
        self, source: str, home: str, walk: Plan, after: Key | None, want: int
    ) -> Walk[Document]:
        """Up to ``want`` rows of one home from ``source``'s store, walking its segments in turn.

        A filter with a residual test reads at most ``budget`` entries of each segment; when a
        segment has more and the rows are still short, the walk stops there (its reach).
        """
        store = self._collections[source]
        rows: list[Document] = []
        examined = 0
        budget = self._budget_factor * want
        for segment in walk.segments(home, after):
            need = want - len(rows)
            if walk.residual is None:
                found = await self._find(store, walk, segment, need)
            else:
                found = await self._scan(store, walk, segment, budget, need)
            rows += found
            examined += len(found)
            if len(rows) == want:
                return Walk(rows, walk.order.key(rows[-1]), examined)
            if walk.residual is not None:
                end = await self._budget_end(store, walk, segment, budget)
                if end is not None:
                    return Walk(rows, walk.order.key(end), examined - len(found) + budget)
        return Walk(rows, None, examined)

    async def _find(
        self, store: Collection, walk: Plan, segment: Document, limit: int
    ) -> list[Document]:
        async def run(hinted: bool) -> list[Document]:
            cursor = store.find(segment).sort(walk.sort()).limit(limit)
            if hinted:
                cursor = cursor.hint(walk.index)
            return [doc async for doc in cursor]

        return await self._hinted(walk, run)

    async def _scan(
        self, store: Collection, walk: Plan, segment: Document, budget: int, limit: int
    ) -> list[Document]:
        """The rows passing the residual test among the segment's first ``budget`` entries."""
        pipeline = walk.pipeline(segment, budget, limit)

        async def run(hinted: bool) -> list[Document]:
            if hinted:
                cursor = await store.aggregate(pipeline, hint=walk.index)
            else:
                cursor = await store.aggregate(pipeline)
            return [doc async for doc in cursor]

        return await self._hinted(walk, run)

    async def _budget_end(
        self, store: Collection, walk: Plan, segment: Document, budget: int
    ) -> Document | None:
        """The segment's ``budget``-th entry (where a budgeted scan stopped), if it has one."""
        fields = {name: 1 for name, _ in walk.sort()}

        async def run(hinted: bool) -> list[Document]:
            cursor = store.find(segment, fields).sort(walk.sort()).skip(budget - 1).limit(1)
            if hinted:
                cursor = cursor.hint(walk.index)
            return [doc async for doc in cursor]

        ends = await self._hinted(walk, run)
        return ends[0] if ends else None

    async def _hinted(
        self, walk: Plan, run: Callable[[bool], Awaitable[list[Document]]]
    ) -> list[Document]:
        """``run`` on the walk's index; without the hint where the store lacks the index.

        A store whose indexes could not be made at start-up (it was down) still answers,
        slower, rather than failing every list read and being held suspect for it.
        """
        try:
            return await run(True)
        except OperationFailure as error:
            if error.code != BAD_VALUE or "hint" not in str(error):
                raise
            log.warning("list index missing; reading without it", extra={"index": walk.index})
            return await run(False)

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
