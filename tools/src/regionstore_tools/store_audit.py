"""The stores' consistency check, from the stores alone: each customer's newest copy is the truth.

``regionstore_testing.audit`` compares the stores with the final states a caller acknowledged.
Without such a record, the newest version any region holds of a customer stands in for it (on a
tie a live copy beats a tombstone, since a move leaves both at one version, and the home
region's copy beats a replica's). The audit then checks that every region of a live customer's
placement (home and replicas, from its zip) holds that version with the same data, that no live
copy exists outside the placement, and that nothing is live whose newest version is a delete.

What it cannot see is a write acknowledged but missing from every region, or one applied that
nobody acknowledged: those need the writer's own record (the chaos and integration tests have it).
Run it when the system is quiet (nothing pending, no lag), or with a wait for it to settle.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.errors import PyMongoError

from regionstore_shared.clients import customers, mongo_clients
from regionstore_shared.documents import CUSTOMER_FIELDS, DELETED, HOME, VERSION, Collection
from regionstore_shared.regions import RegionMap, ZipOutOfRangeError
from regionstore_shared.settings import CommonSettings
from regionstore_testing.audit import AuditReport, Expected, audit

PROJECTION = {VERSION: 1, DELETED: 1, HOME: 1, **dict.fromkeys(CUSTOMER_FIELDS, 1)}
APPNAME = "regionstore-cli"


class StoreUnreadableError(Exception):
    """A regional store could not be read: the audit has no answer."""


@dataclass(frozen=True, slots=True)
class _Copy:
    region: str
    document: dict[str, Any]

    @property
    def rank(self) -> tuple[int, bool, bool]:
        live = not self.document.get(DELETED)
        return (int(self.document[VERSION]), live, self.document.get(HOME) == self.region)


async def newest_states(
    collections: Mapping[str, Collection], regions: RegionMap, *, prefix: str | None = None
) -> list[Expected]:
    """Each customer's newest copy in any region, as the state the audit expects."""
    query: dict[str, Any] = {"_id": {"$regex": f"^{re.escape(prefix)}"}} if prefix else {}
    newest: dict[str, _Copy] = {}
    for region, collection in collections.items():
        try:
            async for document in collection.find(query, PROJECTION):
                copy = _Copy(region, document)
                held = newest.get(document["_id"])
                if held is None or copy.rank > held.rank:
                    newest[document["_id"]] = copy
        except PyMongoError as error:
            raise StoreUnreadableError(f"cannot read {region}'s store: {_short(error)}") from error
    return [_expected(customer_id, copy, regions) for customer_id, copy in newest.items()]


def _expected(customer_id: str, copy: _Copy, regions: RegionMap) -> Expected:
    document = copy.document
    deleted = bool(document.get(DELETED))
    fields = None if deleted else {name: document.get(name) for name in CUSTOMER_FIELDS}
    if fields is not None and not _placeable(fields["customer_zip_code_prefix"], regions):
        fields = None  # the placement then comes from the stored home
    return Expected(
        customer_id=customer_id,
        version=int(document[VERSION]),
        deleted=deleted,
        home=document.get(HOME),
        fields=fields,
    )


def _placeable(zip_prefix: object, regions: RegionMap) -> bool:
    if not isinstance(zip_prefix, int):
        return False
    try:
        regions.home_of(zip_prefix)
    except ZipOutOfRangeError:
        return False
    return True


async def audit_stores(
    collections: Mapping[str, Collection],
    regions: RegionMap,
    *,
    prefix: str | None = None,
    within_s: float = 0.0,
    every_s: float = 1.0,
) -> AuditReport:
    """Audit until clean or until ``within_s`` has passed; the last report."""
    deadline = time.monotonic() + within_s
    while True:
        expected = await newest_states(collections, regions, prefix=prefix)
        try:
            report = await audit(expected, collections, regions)
        except PyMongoError as error:
            raise StoreUnreadableError(f"cannot read the stores: {_short(error)}") from error
        if report.clean or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(every_s)


async def audit_configured_stores(
    settings: CommonSettings, *, prefix: str | None = None, within_s: float = 0.0
) -> AuditReport:
    """``audit_stores`` over the stores the settings name (``REGIONSTORE_STORES__*``)."""
    clients = mongo_clients(settings, APPNAME)
    try:
        collections: dict[str, Collection] = {
            region: customers(client, settings.store) for region, client in clients.items()
        }
        return await audit_stores(
            collections, settings.region_map, prefix=prefix, within_s=within_s
        )
    finally:
        for client in clients.values():
            await client.close()


def _short(error: Exception) -> str:
    # A server selection error ends with the whole topology description: the first part says it.
    text = " ".join(str(error).split()).partition(", Timeout: ")[0]
    return f"{type(error).__name__}: {text[:300]}"
