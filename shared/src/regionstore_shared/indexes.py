"""Indexes the read path relies on, created idempotently by every service at start-up.

One per list shape (docs/reads.md), each behind the home region every list query filters on
and ending in ``_id``, so a page of that shape is a walk of its index in order that stops after
the page: the share of one home region is ``_home`` equal, the filter's equality fields equal,
then its one range field (zip or city) in order, then ``_id``. A filter with both a zip range and
a city walks the zip index and tests the city on a bounded number of entries.

Over live customers only: every query asks for ``_deleted: false``, and about a third of what a
region holds are tombstones that no list returns, so leaving them out makes every index smaller
and every tombstone write cheaper.

The same indexes serve both store kinds. MongoDB walks a compound index past an equality prefix
in order; DocumentDB 1.0 does too, but only with its extended RUM access method, which the local
store enables for new indexes (deploy/local/bin/postgres.sh): under the base RUM method a page
read every match and sorted them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure, PyMongoError

from regionstore_shared.documents import CITY_KEY, DELETED, HOME, Collection

log = logging.getLogger(__name__)

INDEX_NOT_FOUND = 27

_LIVE = {DELETED: False}
_ZIP = "customer_zip_code_prefix"
_STATE = "customer_state"

HOME_ID: Final = "list_home_id"
STATE_ID: Final = "list_state_id"
CITY_ID: Final = "list_city_id"
ZIP_ID: Final = "list_zip_id"
STATE_CITY_ID: Final = "list_state_city_id"
STATE_ZIP_ID: Final = "list_state_zip_id"
UNIQUE_ID: Final = "list_unique_id"


def _live_index(name: str, *keys: str) -> IndexModel:
    return IndexModel([(key, ASCENDING) for key in keys], name=name, partialFilterExpression=_LIVE)


CUSTOMER_INDEXES = (
    _live_index(HOME_ID, HOME, "_id"),
    _live_index(STATE_ID, HOME, _STATE, "_id"),
    _live_index(CITY_ID, HOME, CITY_KEY, "_id"),
    _live_index(ZIP_ID, HOME, _ZIP, "_id"),
    _live_index(STATE_CITY_ID, HOME, _STATE, CITY_KEY, "_id"),
    _live_index(STATE_ZIP_ID, HOME, _STATE, _ZIP, "_id"),
    # A person's customer ids, in every home: a few per unique id, so the home is tested on
    # them rather than leading the index (the unique id is not part of the placement).
    _live_index(UNIQUE_ID, "customer_unique_id", "_id"),
)

#: Indexes earlier versions created, replaced by the ones above; dropped where found, since each
#: costs every write and serves no query any more. The ``live_*`` ones had no ``_id`` at the end,
#: so a page sorted every match of its filter.
OBSOLETE_INDEXES = (
    "home_id",
    "home_zip",
    "home_city",
    "home_state",
    "live_zip",
    "live_city",
    "live_state",
)


async def _drop(collection: Collection, name: str) -> None:
    try:
        await collection.drop_index(name)
    except OperationFailure as error:
        # Every service ensures the indexes at start-up: another one may have dropped it first.
        if error.code != INDEX_NOT_FOUND:
            raise


async def ensure_indexes(collections: Mapping[str, Collection]) -> dict[str, str]:
    """Create the customer indexes in every reachable region; report each region's outcome:
    ``ensured`` or ``failed``."""

    async def one(region: str, collection: Collection) -> str:
        try:
            await collection.create_indexes(list(CUSTOMER_INDEXES))
            existing = await collection.index_information()
            for name in OBSOLETE_INDEXES:
                if name in existing:
                    await _drop(collection, name)
                    log.info("obsolete index dropped", extra={"region": region, "index": name})
        except PyMongoError as error:
            log.warning("indexes not ensured", extra={"region": region, "error": str(error)[:300]})
            return "failed"
        return "ensured"

    results = await asyncio.gather(*(one(r, c) for r, c in collections.items()))
    return dict(zip(collections, results, strict=True))
