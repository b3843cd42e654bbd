"""Indexes the read path relies on, created idempotently by every service at start-up.

One per filterable field, behind the region and liveness every list query filters on. A query
with no field filter walks the ``_id`` index instead (see the gateway's repository), so it needs
none of its own: each secondary index costs every insert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pymongo import ASCENDING, IndexModel
from pymongo.errors import PyMongoError

from regionstore_shared.apply import Collection
from regionstore_shared.documents import CITY_KEY, DELETED, HOME

log = logging.getLogger(__name__)

CUSTOMER_INDEXES = (
    IndexModel(
        [(HOME, ASCENDING), (DELETED, ASCENDING), ("customer_zip_code_prefix", ASCENDING)],
        name="home_zip",
    ),
    IndexModel([(HOME, ASCENDING), (DELETED, ASCENDING), (CITY_KEY, ASCENDING)], name="home_city"),
    IndexModel(
        [(HOME, ASCENDING), (DELETED, ASCENDING), ("customer_state", ASCENDING)], name="home_state"
    ),
)


async def ensure_indexes(collections: Mapping[str, Collection]) -> dict[str, str]:
    """Create the customer indexes in every reachable region; report each region's outcome:
    ``ensured`` or ``failed``."""

    async def one(region: str, collection: Collection) -> str:
        try:
            await collection.create_indexes(list(CUSTOMER_INDEXES))
        except PyMongoError as error:
            log.warning("indexes not ensured", extra={"region": region, "error": str(error)[:300]})
            return "failed"
        return "ensured"

    results = await asyncio.gather(*(one(r, c) for r, c in collections.items()))
    return dict(zip(collections, results, strict=True))
