"""One read of every region per audit: the scenario's id range, served from memory to ``audit``.

``regionstore_testing.audit.audit`` reads in point reads or one pass over the whole collection;
a scenario's customers share one id prefix, and the bench also wants each document's
``_applied_at``. So each region is read once, by that id range, and ``audit`` runs unchanged
over the snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

from regionstore_shared.documents import APPLIED_AT, DELETED, HOME, VERSION, Collection
from regionstore_shared.regions import RegionMap
from regionstore_testing.audit import AuditReport, Expected, audit

Document = dict[str, Any]
PROJECTION = {VERSION: 1, DELETED: 1, HOME: 1, APPLIED_AT: 1}


class _Cursor:
    def __init__(self, documents: list[Document]) -> None:
        self._documents = documents

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Document]:
        for document in self._documents:
            yield document


class SnapshotCollection:
    """The reads ``audit`` makes (all, ``_id: {$in}`` or one ``_id``), served from memory."""

    def __init__(self, documents: Mapping[str, Document]) -> None:
        self.documents = documents

    def _matching(self, query: Document) -> list[Document]:
        if "_id" not in query:
            return list(self.documents.values())
        wanted = query["_id"]
        ids = wanted["$in"] if isinstance(wanted, dict) else [wanted]
        return [self.documents[i] for i in ids if i in self.documents]

    def find(self, query: Document, projection: Any = None) -> _Cursor:
        return _Cursor(self._matching(query))

    async def find_one(self, query: Document, projection: Any = None) -> Document | None:
        found = self._matching(query)
        return found[0] if found else None


def id_range(prefix: str) -> Document:
    """The filter for every id that starts with ``prefix`` (ids are [A-Za-z0-9_-])."""
    return {"_id": {"$gte": prefix, "$lt": prefix[:-1] + chr(ord(prefix[-1]) + 1)}}


async def read(collections: Mapping[str, Collection], prefix: str) -> dict[str, SnapshotCollection]:
    """Every region's documents whose id starts with ``prefix``: one range read per region."""

    async def one(collection: Collection) -> SnapshotCollection:
        cursor = collection.find(id_range(prefix), PROJECTION)
        return SnapshotCollection({doc["_id"]: doc async for doc in cursor})

    names = list(collections)
    snapshots = await asyncio.gather(*(one(collections[n]) for n in names))
    return dict(zip(names, snapshots, strict=True))


async def audit_prefix(
    expected: Iterable[Expected],
    collections: Mapping[str, Collection],
    regions: RegionMap,
    prefix: str,
) -> tuple[AuditReport, dict[str, SnapshotCollection]]:
    """``regionstore_testing.audit.audit`` over one snapshot of the customers under ``prefix``."""
    snapshots = await read(collections, prefix)
    report = await audit(expected, cast(Mapping[str, Collection], snapshots), regions)
    return report, snapshots
