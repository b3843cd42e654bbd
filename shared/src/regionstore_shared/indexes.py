"""Indexes the read path relies on, created idempotently by every service at start-up."""

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
    IndexModel([(HOME, ASCENDING), (DELETED, ASCENDING), ("_id", ASCENDING)], name="home_id"),
    IndexModel(
        [(HOME, ASCENDING), (DELETED, ASCENDING), ("customer_zip_code_prefix", ASCENDING)],
        name="home_zip",
    ),
    IndexModel([(HOME, ASCENDING), (DELETED, ASCENDING), (CITY_KEY, ASCENDING)], name="home_city"),
    IndexModel(
        [(HOME, ASCENDING), (DELETED, ASCENDING), ("customer_state", ASCENDING)], name="home_state"
    ),
)


async def ensure_indexes(collections: Mapping[str, Collection]) -> dict[str, bool]:
    """Create the customer indexes in every reachable region; report which regions have them."""

    async def one(region: str, collection: Collection) -> bool:
        try:
            existing = await collection.index_information()
            # One at a time, and only the missing ones: FerretDB drops the connection when a
            # single createIndexes call repeats several existing indexes.
            for model in CUSTOMER_INDEXES:
                if model.document["name"] not in existing:
                    await collection.create_indexes([model])
        except PyMongoError as error:
            log.warning("indexes not ensured", extra={"region": region, "error": str(error)[:300]})
            return False
        return True

    results = await asyncio.gather(*(one(r, c) for r, c in collections.items()))
    return dict(zip(collections, results, strict=True))
