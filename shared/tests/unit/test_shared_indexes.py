"""The read path's indexes: created everywhere, obsolete ones dropped, races tolerated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from pymongo import IndexModel
from pymongo.errors import AutoReconnect, OperationFailure

from regionstore_shared.documents import Collection
from regionstore_shared.indexes import CUSTOMER_INDEXES, ensure_indexes


class FakeCollection:
    def __init__(self, existing: set[str], *, dropped_by_another: bool = False) -> None:
        self.indexes = set(existing)
        self.created: list[dict[str, Any]] = []
        self.dropped: list[str] = []
        self.dropped_by_another = dropped_by_another
        self.fail: Exception | None = None

    async def create_indexes(self, models: list[IndexModel]) -> None:
        if self.fail is not None:
            raise self.fail
        self.created += [m.document for m in models]
        self.indexes |= {m.document["name"] for m in models}

    async def index_information(self) -> dict[str, Any]:
        return {name: {} for name in self.indexes}

    async def drop_index(self, name: str) -> None:
        if self.dropped_by_another:
            raise OperationFailure("index not found with name [home_zip]", code=27)
        self.indexes.discard(name)
        self.dropped.append(name)


def over(**stores: FakeCollection) -> Mapping[str, Collection]:
    return cast("Mapping[str, Collection]", stores)


class TestEnsureIndexes:
    def test_every_index_walks_live_customers_in_id_order_last(self) -> None:
        for model in CUSTOMER_INDEXES:
            document = model.document
            keys = list(document["key"])
            assert keys[-1] == "_id"
            assert document["partialFilterExpression"] == {"_deleted": False}

    def test_all_but_the_unique_id_index_lead_with_the_home(self) -> None:
        leading = {
            model.document["name"]: next(iter(model.document["key"])) for model in CUSTOMER_INDEXES
        }
        assert leading.pop("list_unique_id") == "customer_unique_id"
        assert set(leading.values()) == {"_home"}

    async def test_creates_them_and_drops_the_obsolete_ones(self) -> None:
        store = FakeCollection({"_id_", "home_id", "live_zip", "other"})
        assert await ensure_indexes(over(region_1=store)) == {"region_1": "ensured"}
        made = {d["name"] for d in store.created}
        assert made == {
            "list_home_id",
            "list_state_id",
            "list_city_id",
            "list_zip_id",
            "list_state_city_id",
            "list_state_zip_id",
            "list_unique_id",
        }
        assert sorted(store.dropped) == ["home_id", "live_zip"]
        assert store.indexes == {"_id_", "other", *made}

    async def test_an_index_another_service_dropped_first_is_fine(self) -> None:
        store = FakeCollection({"home_zip"}, dropped_by_another=True)
        assert await ensure_indexes(over(region_1=store)) == {"region_1": "ensured"}

    async def test_an_unreachable_region_is_reported_and_the_others_ensured(self) -> None:
        down, up = FakeCollection(set()), FakeCollection(set())
        down.fail = AutoReconnect("connection refused")
        result = await ensure_indexes(over(region_1=down, region_2=up))
        assert result == {"region_1": "failed", "region_2": "ensured"}
