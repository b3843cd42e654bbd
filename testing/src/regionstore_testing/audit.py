"""Proves what the stores hold against what was acknowledged.

For every acknowledged write the caller knows the customer's final state (version, deleted or
not, home region, and optionally every field). The audit reads every region and counts, per
customer:

- ``lost``: a region of the placement lacks the final version, or holds it as a tombstone;
- ``stale``: a region of the placement holds an older version;
- ``overtaken``: given the final write's command id and those acknowledged before it was sent,
  a region holds one of those instead: an earlier write won over a later one;
- ``mismatched``: a region of the placement holds the final version with other field values;
- ``duplicated``: a live copy in a region outside the placement, or a version nobody wrote;
- ``resurrected``: a deleted customer is live anywhere;
- ``strays``: with a ``stray_prefix``, a live customer under that id prefix that nobody
  acknowledged (a write refused, yet applied).

When the expected state carries the customer's fields, the placement comes from its zip through
the region map, not from what the gateway answered. When it carries the final write's command id,
a region must hold that very write (the consumers may apply it above the version the gateway
gave it, so the version alone does not say which write a region holds). A correct system ends
with all at zero.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import PyMongoError

from regionstore_shared.documents import (
    COMMAND_ID,
    CUSTOMER_FIELDS,
    DELETED,
    HOME,
    VERSION,
    Collection,
)
from regionstore_shared.regions import RegionMap

_POINT_READS = 200


@dataclass(frozen=True, slots=True)
class Expected:
    """The final acknowledged state of one customer."""

    customer_id: str
    version: int
    deleted: bool
    home: str | None = None
    fields: Mapping[str, Any] | None = None
    """The customer's fields at the final version (``customer_unique_id``, zip, city, state)."""
    command_id: str | None = None
    """The final write's command id: a region must hold that write, at whatever version."""
    earlier: frozenset[str] = frozenset()
    """Command ids of the customer's writes acknowledged before the final one was sent."""

    def placement(self, regions: RegionMap) -> tuple[str, ...]:
        """The regions that must hold the customer live: none once deleted."""
        if self.deleted:
            return ()
        if self.fields is not None:
            return regions.placement_of_home(
                regions.home_of(int(self.fields["customer_zip_code_prefix"]))
            )
        return () if self.home is None else regions.placement_of_home(self.home)


@dataclass(slots=True)
class AuditReport:
    """Counts of every kind of divergence, and a few examples of each."""

    checked: int = 0
    lost: int = 0
    stale: int = 0
    duplicated: int = 0
    resurrected: int = 0
    mismatched: int = 0
    strays: int = 0
    overtaken: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when every customer is exactly where and as it should be."""
        return not (
            self.lost
            or self.stale
            or self.duplicated
            or self.resurrected
            or self.mismatched
            or self.strays
            or self.overtaken
        )

    def _note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        sample = self.examples.setdefault(kind, [])
        if len(sample) < 5:
            sample.append(text)


async def _read_region(
    collection: Collection, ids: list[str], projection: dict[str, int]
) -> dict[str, dict[str, Any]]:
    if len(ids) <= _POINT_READS:
        documents = await asyncio.gather(
            *(collection.find_one({"_id": customer_id}, projection) for customer_id in ids)
        )
        return {d["_id"]: d for d in documents if d is not None}
    # One pass over the collection: the audit checks most of what a region holds, so a scan
    # reads less than one lookup per customer.
    wanted = set(ids)
    return {d["_id"]: d async for d in collection.find({}, projection) if d["_id"] in wanted}


async def _live_under(collection: Collection, prefix: str) -> list[str]:
    query = {"_id": {"$regex": f"^{re.escape(prefix)}"}, DELETED: False}
    return [d["_id"] async for d in collection.find(query, {"_id": 1})]


async def audit(
    expected: Iterable[Expected],
    collections: Mapping[str, Collection],
    regions: RegionMap,
    *,
    stray_prefix: str | None = None,
) -> AuditReport:
    """Compare every region's documents with the expected final states.

    With ``stray_prefix``, every live customer whose id starts with it must be expected.
    """
    wanted = {e.customer_id: e for e in expected}
    ids = sorted(wanted)
    names = list(collections)
    projection = {VERSION: 1, DELETED: 1, HOME: 1, COMMAND_ID: 1}
    if any(e.fields is not None for e in wanted.values()):
        projection |= dict.fromkeys(CUSTOMER_FIELDS, 1)
    reads = await asyncio.gather(*(_read_region(collections[r], ids, projection) for r in names))
    held = dict(zip(names, reads, strict=True))
    report = AuditReport(checked=len(wanted))
    for customer_id, final in wanted.items():
        placement = final.placement(regions)
        for region in names:
            _check(report, final, placement, region, held[region].get(customer_id))
    if stray_prefix is not None:
        for region in names:
            for customer_id in await _live_under(collections[region], stray_prefix):
                if customer_id not in wanted:
                    report._note("strays", f"{customer_id}@{region}")
    return report


def _check(
    report: AuditReport,
    final: Expected,
    placement: tuple[str, ...],
    region: str,
    document: dict[str, Any] | None,
) -> None:
    live = document is not None and not document.get(DELETED)
    where = f"{final.customer_id}@{region}"
    if final.deleted:
        if live:
            report._note("resurrected", where)
        return
    if region not in placement:
        if live:
            report._note("duplicated", where)
        return
    if final.command_id is not None:
        _check_write(report, final, where, document, live)
        return
    if document is None or (document[VERSION] == final.version and not live):
        report._note("lost", where)
    elif document[VERSION] < final.version:
        report._note("stale", f"{where} v{document[VERSION]} < v{final.version}")
    elif document[VERSION] > final.version:
        report._note("duplicated", f"{where} holds v{document[VERSION]} > v{final.version}")
    else:
        _check_fields(report, final, where, document)


def _check_write(
    report: AuditReport, final: Expected, where: str, document: dict[str, Any] | None, live: bool
) -> None:
    """A region of the placement against the final write, known by its command id."""
    held = None if document is None else document.get(COMMAND_ID)
    if document is None or (held == final.command_id and not live):
        report._note("lost", where)
    elif held in final.earlier:
        report._note("overtaken", f"{where} holds {held}, acknowledged before {final.command_id}")
    elif held != final.command_id:
        report._note("stale", f"{where} holds {held}, not {final.command_id}")
    else:
        _check_fields(report, final, where, document)


def _check_fields(
    report: AuditReport, final: Expected, where: str, document: dict[str, Any]
) -> None:
    if final.fields is not None:
        differ = sorted(k for k, v in final.fields.items() if document.get(k) != v)
        if differ:
            report._note("mismatched", f"{where} differs in {', '.join(differ)}")


async def wait_for_clean(
    expected: Iterable[Expected],
    collections: Mapping[str, Collection],
    regions: RegionMap,
    *,
    within_s: float,
    every_s: float = 0.25,
    stray_prefix: str | None = None,
) -> AuditReport:
    """Audit until clean or until ``within_s`` runs out; return the last report."""
    wanted = list(expected)
    deadline = time.monotonic() + within_s
    while True:
        try:
            report = await audit(wanted, collections, regions, stray_prefix=stray_prefix)
        except PyMongoError:
            # A store too slow to answer (a busy machine) is not a divergence: read it again.
            if time.monotonic() >= deadline:
                raise
        else:
            if report.clean or time.monotonic() >= deadline:
                return report
        await asyncio.sleep(every_s)
