"""How a region replaces the documents an insert collided with, newest version only.

MongoDB checks the version inside the update's filter, ``{_id, _v: {$lt: version}}``, atomically
and through the ``_id`` index. FerretDB 1.x (the local stack's store) only looks a filter up by
index when it is a lone ``_id``; any other filter scans the whole collection for every statement,
which made a 1,000-command replay take minutes. Against FerretDB the applier therefore reads the
stored versions by ``_id`` and replaces the older documents by ``_id`` alone. FerretDB runs a
filtered update as a read and a write in separate transactions anyway, so the version check is
read-then-write there whichever way it is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from regionstore_shared.documents import VERSION
from regionstore_shared.store_kind import is_ferretdb

Collection = AsyncCollection[dict[str, Any]]

# FerretDB 1.24 (SQLite) holds a pooled connection per update statement until the command ends,
# and its pool has 100: writer, replicator and three drainers replacing at once must stay below
# it together, or the store hangs until every request times out (64 per request did).
REPLACE_CHUNK = 16
# Point reads in flight per applier and region while versions are read first.
READ_CONCURRENCY = 8


class ReplaceGuard(StrEnum):
    """Where the ``_v < version`` check of a replace happens."""

    IN_FILTER = "in_filter"
    READ_FIRST = "read_first"


async def detect_guard(collection: Collection) -> ReplaceGuard:
    """The guard a region's store serves from its ``_id`` index."""
    return ReplaceGuard.READ_FIRST if await is_ferretdb(collection) else ReplaceGuard.IN_FILTER


@dataclass(frozen=True, slots=True)
class Replacement:
    """A document to store if the region holds an older version of it."""

    key: str
    version: int
    document: dict[str, Any]


@dataclass(slots=True)
class ReplaceOutcome:
    """What became of a list of replacements."""

    stale: int = 0
    missing: list[int] = field(default_factory=list)
    """Indexes of replacements whose document was gone when read: they need an insert again."""


async def replace_newer(
    collection: Collection, guard: ReplaceGuard, replacements: Sequence[Replacement]
) -> ReplaceOutcome:
    """Replace each stored document that is older than its replacement."""
    if guard is ReplaceGuard.IN_FILTER:
        requests = [
            ReplaceOne({"_id": r.key, VERSION: {"$lt": r.version}}, r.document)
            for r in replacements
        ]
        matched = await _bulk_replace(collection, requests)
        return ReplaceOutcome(stale=len(replacements) - matched)
    stored = await _stored_versions(collection, [r.key for r in replacements])
    outcome = ReplaceOutcome()
    newer: list[int] = []
    for index, replacement in enumerate(replacements):
        held = stored.get(replacement.key)
        if held is None:
            outcome.missing.append(index)
        elif held < replacement.version:
            newer.append(index)
        else:
            outcome.stale += 1
    requests = [ReplaceOne({"_id": replacements[i].key}, replacements[i].document) for i in newer]
    if await _bulk_replace(collection, requests) < len(newer):
        # A document went away between the read and the replace: read those again.
        again = await _stored_versions(collection, [replacements[i].key for i in newer])
        outcome.missing.extend(i for i in newer if replacements[i].key not in again)
    return outcome


async def _bulk_replace(collection: Collection, requests: list[ReplaceOne[dict[str, Any]]]) -> int:
    matched = 0
    for start in range(0, len(requests), REPLACE_CHUNK):
        chunk = requests[start : start + REPLACE_CHUNK]
        matched += (await collection.bulk_write(chunk, ordered=False)).matched_count
    return matched


async def _stored_versions(collection: Collection, keys: list[str]) -> dict[str, int]:
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(key: str) -> tuple[str, int | None]:
        async with gate:
            doc = await collection.find_one({"_id": key}, {VERSION: 1})
        return key, None if doc is None else int(doc[VERSION])

    found = await asyncio.gather(*(one(key) for key in keys))
    return {key: version for key, version in found if version is not None}
