"""The audit from the stores alone, over in-memory stores."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast

from regionstore_shared.documents import Collection
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_tools.store_audit import audit_stores, newest_states

REGIONS = RegionMap(DEFAULT_REGIONS)


class FakeCollection:
    """``find`` and ``find_one`` over a dict of documents, for the queries the audit makes."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = {d["_id"]: d for d in documents}

    async def find_one(self, query: dict[str, Any], projection: Any = None) -> Any:
        return self.documents.get(query["_id"])

    def find(self, query: dict[str, Any], projection: Any = None) -> AsyncIterator[Any]:
        async def matching() -> AsyncIterator[Any]:
            for document in list(self.documents.values()):
                if self._matches(document, query):
                    yield document

        return matching()

    @staticmethod
    def _matches(document: dict[str, Any], query: dict[str, Any]) -> bool:
        for name, wanted in query.items():
            if isinstance(wanted, dict):
                if not re.match(wanted["$regex"], document[name]):
                    return False
            elif document.get(name) != wanted:
                return False
        return True


def live(customer_id: str, version: int, home: str, zip_prefix: int, city: str = "x") -> Any:
    return {
        "_id": customer_id,
        "_v": version,
        "_deleted": False,
        "_home": home,
        "customer_unique_id": "u",
        "customer_zip_code_prefix": zip_prefix,
        "customer_city": city,
        "customer_state": "SP",
    }


def tombstone(customer_id: str, version: int, home: str | None = None) -> Any:
    document = {"_id": customer_id, "_v": version, "_deleted": True}
    return document if home is None else {**document, "_home": home}


def stores(**documents: list[dict[str, Any]]) -> dict[str, Collection]:
    names = [spec.name for spec in DEFAULT_REGIONS]
    return {name: cast(Collection, FakeCollection(documents.get(name, []))) for name in names}


def placement(zip_prefix: int) -> tuple[str, ...]:
    return REGIONS.placement_of_home(REGIONS.home_of(zip_prefix))


class TestAuditStores:
    async def test_home_and_replica_in_step_is_clean(self) -> None:
        home, replica = placement(1310)
        collections = stores(
            **{home: [live("a", 3, home, 1310)], replica: [live("a", 3, home, 1310)]}
        )
        report = await audit_stores(collections, REGIONS)
        assert report.clean
        assert report.checked == 1

    async def test_a_stale_replica(self) -> None:
        home, replica = placement(1310)
        collections = stores(
            **{home: [live("a", 4, home, 1310)], replica: [live("a", 3, home, 1310)]}
        )
        report = await audit_stores(collections, REGIONS)
        assert (report.stale, report.clean) == (1, False)
        assert report.examples["stale"] == [f"a@{replica} v3 < v4"]

    async def test_same_version_other_data_is_mismatched_on_the_replica(self) -> None:
        home, replica = placement(1310)
        collections = stores(
            **{
                home: [live("a", 3, home, 1310, city="sao paulo")],
                replica: [live("a", 3, home, 1310, city="santos")],
            }
        )
        report = await audit_stores(collections, REGIONS)
        assert report.mismatched == 1
        assert report.examples["mismatched"] == [f"a@{replica} differs in customer_city"]

    async def test_a_live_copy_outside_the_placement_is_a_stray(self) -> None:
        home, replica = placement(1310)
        (outside,) = set(REGIONS.names) - {home, replica}
        collections = stores(
            **{
                home: [live("a", 3, home, 1310)],
                replica: [live("a", 3, home, 1310)],
                outside: [live("a", 3, home, 1310)],
            }
        )
        report = await audit_stores(collections, REGIONS)
        assert report.duplicated == 1
        assert report.examples["duplicated"] == [f"a@{outside}"]

    async def test_a_live_copy_older_than_a_delete_is_resurrected(self) -> None:
        home, replica = placement(1310)
        collections = stores(**{home: [tombstone("a", 5)], replica: [live("a", 4, home, 1310)]})
        report = await audit_stores(collections, REGIONS)
        assert report.resurrected == 1

    async def test_a_move_leaves_a_tombstone_at_the_same_version_and_is_clean(self) -> None:
        old_home, _ = placement(1310)
        new_home, new_replica = placement(80010)
        documents: dict[str, list[dict[str, Any]]] = {name: [] for name in REGIONS.names}
        for name in {old_home, *placement(1310)} - {new_home, new_replica}:
            documents[name].append(tombstone("a", 6, new_home))
        for name in (new_home, new_replica):
            documents[name].append(live("a", 6, new_home, 80010))
        report = await audit_stores(stores(**documents), REGIONS)
        assert report.clean, report

    async def test_a_placement_region_without_the_customer_has_lost_it(self) -> None:
        home, replica = placement(1310)
        report = await audit_stores(stores(**{home: [live("a", 3, home, 1310)]}), REGIONS)
        assert report.lost == 1
        assert report.examples["lost"] == [f"a@{replica}"]

    async def test_prefix_limits_the_customers(self) -> None:
        home, replica = placement(1310)
        collections = stores(
            **{
                home: [live("mine-1", 1, home, 1310), live("other", 2, home, 1310)],
                replica: [live("mine-1", 1, home, 1310)],
            }
        )
        assert (await audit_stores(collections, REGIONS, prefix="mine-")).clean
        assert not (await audit_stores(collections, REGIONS)).clean


class TestNewestStates:
    async def test_the_homes_copy_wins_a_tie(self) -> None:
        home, replica = placement(1310)
        collections = stores(
            **{
                replica: [live("a", 3, home, 1310, city="replica")],
                home: [live("a", 3, home, 1310, city="home")],
            }
        )
        (state,) = await newest_states(collections, REGIONS)
        assert state.fields is not None
        assert state.fields["customer_city"] == "home"
        assert (state.version, state.deleted, state.home) == (3, False, home)
