"""Which server answers for a regional store: MongoDB, or FerretDB standing in for it locally.

FerretDB 1.x serves only a filter on ``_id`` alone from an index and runs every other filter by
scanning the collection, so the services adapt two things to it: how collided documents are
replaced (:mod:`regionstore_shared.replace`) and whether secondary indexes are worth their
write cost (:mod:`regionstore_shared.indexes`).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.collection import AsyncCollection


async def is_ferretdb(collection: AsyncCollection[dict[str, Any]]) -> bool:
    """Whether the collection's server is FerretDB, which names itself in ``buildInfo``."""
    info: dict[str, Any] = await collection.database.client.admin.command("buildInfo")
    return "ferretdbVersion" in info
