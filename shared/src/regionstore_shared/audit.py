"""Proves what the stores hold against what was acknowledged.

For every acknowledged write the caller knows the customer's final state (version, deleted or
not, home region). The audit reads every region and counts, per customer:

- ``lost``: a region of the placement lacks the final version, or holds it as a tombstone;
- ``stale``: a region of the placement holds an older version;
- ``duplicated``: a live copy in a region outside the placement, or a version nobody wrote;
- ``resurrected``: a deleted customer is live anywhere.

A correct system ends with all four at zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from regionstore_shared.apply import Collection
from regionstore_shared.documents import DELETED, HOME, VERSION
from regionstore_shared.regions import RegionMap

_POINT_READS = 200


@dataclass(frozen=True, slots=True)
class Expected:
    """The final acknowledged state of one customer."""

    customer_id: str
    version: int
    deleted: bool
    home: str | None = None


@dataclass(slots=True)
class AuditReport:
    """Counts of every kind of divergence, and a few examples of each."""

    checked: int = 0
    lost: int = 0
    stale: int = 0
    duplicated: int = 0
    resurrected: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when every customer is exactly where and as it should be."""
        return not (self.lost or self.stale or self.duplicated or self.resurrected)

    def _note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        sample = self.examples.setdefault(kind, [])
        if len(sample) < 5:
            sample.append(text)


async def _read_region(collection: Collection, ids: list[str]) -> dict[str, dict[str, Any]]:
    projection = {VERSION: 1, DELETED: 1, HOME: 1}
    if len(ids) <= _POINT_READS:
        documents = await asyncio.gather(
            *(collection.find_one({"_id": customer_id}, projection) for customer_id in ids)
        )
        return {d["_id"]: d for d in documents if d is not None}
    # One pass over the collection: the audit checks most of what a region holds, so a scan
    # reads less than one lookup per customer.
    wanted = set(ids)
    return {d["_id"]: d async for d in collection.find({}, projection) if d["_id"] in wanted}


async def audit(
    expected: Iterable[Expected], collections: Mapping[str, Collection], regions: RegionMap
) -> AuditReport:
    """Compare every region's documents with the expected final states."""
    wanted = {e.customer_id: e for e in expected}
    ids = sorted(wanted)
    names = list(collections)
    reads = await asyncio.gather(*(_read_region(collections[r], ids) for r in names))
    held = dict(zip(names, reads, strict=True))
    report = AuditReport(checked=len(wanted))
    for customer_id, final in wanted.items():
        placement = (
            () if final.deleted or final.home is None else regions.placement_of_home(final.home)
        )
        for region in names:
            document = held[region].get(customer_id)
            live = document is not None and not document.get(DELETED)
            where = f"{customer_id}@{region}"
            if final.deleted:
                if live:
                    report._note("resurrected", where)
                continue
            if region not in placement:
                if live:
                    report._note("duplicated", where)
                continue
            if document is None or (document[VERSION] == final.version and not live):
                report._note("lost", where)
            elif document[VERSION] < final.version:
                report._note("stale", f"{where} v{document[VERSION]} < v{final.version}")
            elif document[VERSION] > final.version:
                report._note("duplicated", f"{where} holds v{document[VERSION]} > v{final.version}")
    return report


async def wait_for_clean(
    expected: Iterable[Expected],
    collections: Mapping[str, Collection],
    regions: RegionMap,
    *,
    within_s: float,
    every_s: float = 0.25,
) -> AuditReport:
    """Audit until clean or until ``within_s`` runs out; return the last report."""
    wanted = list(expected)
    deadline = time.monotonic() + within_s
    while True:
        report = await audit(wanted, collections, regions)
        if report.clean or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(every_s)
