"""The audit: what the stores hold against the acknowledged final states, against small fakes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from regionstore_shared.documents import (
    COMMAND_ID,
    CUSTOMER_FIELDS,
    DELETED,
    HOME,
    VERSION,
    Collection,
)
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_testing.audit import AuditReport, Expected, audit, wait_for_clean

Document = dict[str, Any]
REGIONS = RegionMap(DEFAULT_REGIONS)
NAMES = ("region_1", "region_2", "region_3")
PROJECTION = {VERSION: 1, DELETED: 1, HOME: 1, COMMAND_ID: 1}
FIELD_PROJECTION = dict.fromkeys(CUSTOMER_FIELDS, 1)
POINT_READS = 200  # the most ids the audit reads one by one


class FakeCollection:
    """A regional store in a dict that records how it is read."""

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.point_reads = 0
        self.scans: list[tuple[Document, Mapping[str, int]]] = []

    @staticmethod
    def _project(doc: Document, projection: Mapping[str, int]) -> Document:
        return {k: v for k, v in doc.items() if k == "_id" or projection.get(k)}

    async def find_one(self, query: Document, projection: Mapping[str, int]) -> Document | None:
        assert set(query) == {"_id"}, "a point read by _id"
        assert isinstance(query["_id"], str)
        assert dict(projection) in (PROJECTION, PROJECTION | FIELD_PROJECTION)
        self.point_reads += 1
        doc = self.docs.get(query["_id"])
        return None if doc is None else self._project(doc, projection)

    def find(self, query: Document, projection: Mapping[str, int]) -> AsyncIterator[Document]:
        self.scans.append((query, projection))

        def matches(doc: Document) -> bool:
            if "_id" in query and not re.match(query["_id"]["$regex"], doc["_id"]):
                return False
            return DELETED not in query or doc.get(DELETED) == query[DELETED]

        async def cursor() -> AsyncIterator[Document]:
            for doc in list(self.docs.values()):
                if matches(doc):
                    yield self._project(doc, projection)

        return cursor()


class Stores:
    """Three fake regions under the default map (region_1's placement is region_1, region_3)."""

    def __init__(self) -> None:
        self.regions = {name: FakeCollection() for name in NAMES}

    @property
    def collections(self) -> Mapping[str, Collection]:
        return cast("Mapping[str, Collection]", self.regions)

    def live(self, region: str, customer_id: str, version: int, home: str = "region_1") -> None:
        self.regions[region].docs[customer_id] = {
            "_id": customer_id,
            VERSION: version,
            DELETED: False,
            HOME: home,
            "customer_city": "franca",
        }

    def tombstone(
        self, region: str, customer_id: str, version: int, home: str | None = None
    ) -> None:
        """A delete's tombstone, or with ``home`` an upsert's (the customer lives there)."""
        doc: Document = {"_id": customer_id, VERSION: version, DELETED: True}
        if home is not None:
            doc[HOME] = home
        self.regions[region].docs[customer_id] = doc

    def placed(self, customer_id: str, version: int, home: str = "region_1") -> None:
        """What one upsert leaves: live in the placement, a tombstone everywhere else."""
        placement = REGIONS.placement_of_home(home)
        for region in NAMES:
            if region in placement:
                self.live(region, customer_id, version, home)
            else:
                self.tombstone(region, customer_id, version, home)

    def deleted(self, customer_id: str, version: int) -> None:
        """What one delete leaves: a tombstone in every region."""
        for region in NAMES:
            self.tombstone(region, customer_id, version)

    async def audit(self, *expected: Expected) -> AuditReport:
        return await audit(expected, self.collections, REGIONS)


def live(customer_id: str = "c", version: int = 5, home: str = "region_1") -> Expected:
    return Expected(customer_id=customer_id, version=version, deleted=False, home=home)


def gone(customer_id: str = "c", version: int = 5) -> Expected:
    return Expected(customer_id=customer_id, version=version, deleted=True)


def counts(report: AuditReport) -> tuple[int, int, int, int]:
    return (report.lost, report.stale, report.duplicated, report.resurrected)


@pytest.fixture
def stores() -> Stores:
    return Stores()


class TestClean:
    @pytest.mark.parametrize("home", NAMES)
    async def test_a_placed_customer_with_tombstones_elsewhere_is_clean(
        self, stores: Stores, home: str
    ) -> None:
        stores.placed("c", 5, home)
        report = await stores.audit(live(home=home))
        assert report.clean
        assert (report.checked, counts(report), report.examples) == (1, (0, 0, 0, 0), {})

    async def test_a_placed_customer_without_tombstones_elsewhere_is_clean(
        self, stores: Stores
    ) -> None:
        stores.live("region_1", "c", 5)
        stores.live("region_3", "c", 5)
        assert (await stores.audit(live())).clean

    async def test_a_deleted_customer_tombstoned_everywhere_is_clean(self, stores: Stores) -> None:
        stores.deleted("c", 9)
        assert (await stores.audit(gone(version=9))).clean

    async def test_a_deleted_customer_no_region_ever_saw_is_clean(self, stores: Stores) -> None:
        assert (await stores.audit(gone())).clean

    async def test_nothing_expected_is_clean(self, stores: Stores) -> None:
        stores.live("region_2", "stray", 1)
        report = await stores.audit()
        assert (report.checked, report.clean) == (0, True)


class TestDivergence:
    async def test_lost_a_placement_region_lacks_the_customer(self, stores: Stores) -> None:
        stores.live("region_1", "c", 5)
        report = await stores.audit(live())
        assert counts(report) == (1, 0, 0, 0)
        assert report.examples == {"lost": ["c@region_3"]}
        assert not report.clean

    async def test_lost_everywhere(self, stores: Stores) -> None:
        report = await stores.audit(live())
        assert counts(report) == (2, 0, 0, 0)
        assert report.examples["lost"] == ["c@region_1", "c@region_3"]

    async def test_stale_a_placement_region_holds_an_older_version(self, stores: Stores) -> None:
        stores.placed("c", 5)
        stores.live("region_3", "c", 4)
        report = await stores.audit(live())
        assert counts(report) == (0, 1, 0, 0)
        assert report.examples == {"stale": ["c@region_3 v4 < v5"]}

    async def test_stale_an_older_tombstone_in_the_placement(self, stores: Stores) -> None:
        stores.placed("c", 5)
        stores.tombstone("region_1", "c", 3)
        report = await stores.audit(live())
        assert counts(report) == (0, 1, 0, 0)

    async def test_duplicated_a_live_copy_outside_the_placement(self, stores: Stores) -> None:
        stores.placed("c", 5)
        stores.live("region_2", "c", 4)  # the move away from region_2 never tombstoned it
        report = await stores.audit(live())
        assert counts(report) == (0, 0, 1, 0)
        assert report.examples == {"duplicated": ["c@region_2"]}

    async def test_a_tombstone_outside_the_placement_is_no_duplicate(self, stores: Stores) -> None:
        stores.placed("c", 5)
        stores.tombstone("region_2", "c", 2)  # older than the final version: still fine
        assert (await stores.audit(live())).clean

    async def test_a_placement_region_holding_a_newer_version_is_flagged(
        self, stores: Stores
    ) -> None:
        stores.placed("c", 5)
        stores.live("region_1", "c", 6)
        report = await stores.audit(live())
        assert counts(report) == (0, 0, 1, 0)
        assert report.examples["duplicated"] == ["c@region_1 holds v6 > v5"]

    async def test_a_placement_region_holding_a_tombstone_at_the_final_version_lost_it(
        self, stores: Stores
    ) -> None:
        stores.placed("c", 5)
        stores.tombstone("region_3", "c", 5)
        report = await stores.audit(live())
        assert counts(report) == (1, 0, 0, 0)
        assert report.examples["lost"] == ["c@region_3"]

    @pytest.mark.parametrize("region", NAMES)
    async def test_resurrected_a_deleted_customer_live_somewhere(
        self, stores: Stores, region: str
    ) -> None:
        stores.deleted("c", 9)
        stores.live(region, "c", 4)
        report = await stores.audit(gone(version=9))
        assert counts(report) == (0, 0, 0, 1)
        assert report.examples == {"resurrected": [f"c@{region}"]}

    async def test_resurrected_counts_every_live_region(self, stores: Stores) -> None:
        stores.placed("c", 5)
        report = await stores.audit(gone(version=9))
        assert counts(report) == (0, 0, 0, 2)

    async def test_each_customer_is_judged_on_its_own(self, stores: Stores) -> None:
        stores.placed("ok", 5)
        stores.placed("moved", 7, home="region_2")  # region_2, region_1
        stores.live("region_3", "moved", 6)  # left behind from its old placement
        stores.live("region_1", "half", 3)  # region_3 never got it
        stores.deleted("del", 8)
        stores.live("region_2", "del", 8)
        report = await stores.audit(
            live("ok"), live("moved", 7, "region_2"), live("half", 3), gone("del", 8)
        )
        assert report.checked == 4
        assert counts(report) == (1, 0, 1, 1)
        assert report.examples == {
            "duplicated": ["moved@region_3"],
            "lost": ["half@region_3"],
            "resurrected": ["del@region_2"],
        }

    async def test_examples_are_capped_at_five_while_counts_are_not(self, stores: Stores) -> None:
        report = await stores.audit(*(live(f"c{i}") for i in range(4)))
        assert report.lost == 8
        assert len(report.examples["lost"]) == 5


class TestByCommand:
    """The final write known by its command id: versions may have been lifted by the consumers."""

    def wrote(self, stores: Stores, command_id: str, version: int) -> None:
        stores.placed("c", version)
        for region in NAMES:
            stores.regions[region].docs["c"][COMMAND_ID] = command_id

    @staticmethod
    def final(command_id: str = "second", **changes: object) -> Expected:
        base = Expected("c", 5, deleted=False, home="region_1", command_id=command_id)
        return dataclasses.replace(base, earlier=frozenset({"first"}), **changes)

    async def test_the_final_write_at_a_lifted_version_is_clean(self, stores: Stores) -> None:
        self.wrote(stores, "second", 77)
        assert (await stores.audit(self.final())).clean

    async def test_an_earlier_acknowledged_write_that_won_is_overtaken(
        self, stores: Stores
    ) -> None:
        self.wrote(stores, "first", 9)
        report = await stores.audit(self.final())
        assert (report.overtaken, report.clean) == (2, False)
        assert report.examples["overtaken"][0].startswith("c@region_1 holds first")

    async def test_another_write_is_stale(self, stores: Stores) -> None:
        self.wrote(stores, "nobody acknowledged it", 9)
        report = await stores.audit(self.final())
        assert (report.stale, report.overtaken) == (2, 0)

    async def test_the_final_write_as_a_tombstone_is_lost(self, stores: Stores) -> None:
        stores.deleted("c", 5)
        for region in NAMES:
            stores.regions[region].docs["c"][COMMAND_ID] = "second"
        assert (await stores.audit(self.final())).lost == 2


class TestReadStrategy:
    async def test_up_to_the_limit_each_id_is_one_point_read_per_region(
        self, stores: Stores
    ) -> None:
        expected = [live(f"c{i:03}") for i in range(POINT_READS)]
        for e in expected:
            stores.placed(e.customer_id, e.version)
        report = await stores.audit(*expected)
        assert (report.checked, report.clean) == (POINT_READS, True)
        for store in stores.regions.values():
            assert (store.point_reads, store.scans) == (POINT_READS, [])

    async def test_above_the_limit_each_region_is_scanned_once(self, stores: Stores) -> None:
        expected = [live(f"c{i:03}") for i in range(POINT_READS + 1)]
        for e in expected:
            stores.placed(e.customer_id, e.version)
        report = await stores.audit(*expected)
        assert (report.checked, report.clean) == (POINT_READS + 1, True)
        for store in stores.regions.values():
            assert store.point_reads == 0
            assert store.scans == [({}, PROJECTION)]

    @pytest.mark.parametrize("n", [4, POINT_READS, POINT_READS + 1, 2 * POINT_READS])
    async def test_both_strategies_find_the_same_divergences(self, stores: Stores, n: int) -> None:
        expected = [live(f"c{i:03}") for i in range(n - 1)] + [gone("dead", 9)]
        for e in expected[:-1]:
            stores.placed(e.customer_id, e.version)
        stores.deleted("dead", 9)
        stores.regions["region_3"].docs.pop("c000")  # lost
        stores.live("region_1", "c001", 4)  # stale
        stores.live("region_2", "c002", 5)  # duplicated
        stores.live("region_3", "dead", 9)  # resurrected
        stores.live("region_2", "unexpected", 1)  # not asked about: ignored
        report = await stores.audit(*expected)
        assert report.checked == n
        assert counts(report) == (1, 1, 1, 1)
        assert report.examples == {
            "lost": ["c000@region_3"],
            "stale": ["c001@region_1 v4 < v5"],
            "duplicated": ["c002@region_2"],
            "resurrected": ["dead@region_3"],
        }
        scanned = n > POINT_READS
        for store in stores.regions.values():
            assert (store.point_reads, len(store.scans)) == ((0, 1) if scanned else (n, 0))

    async def test_a_repeated_expectation_is_checked_once(self, stores: Stores) -> None:
        stores.placed("c", 5)
        report = await stores.audit(live(), live())
        assert (report.checked, report.clean) == (1, True)
        assert stores.regions["region_1"].point_reads == 1


async def _refuse(query: Document, projection: Mapping[str, int]) -> Document | None:
    raise ServerSelectionTimeoutError("no servers found yet")


class TestWaitForClean:
    async def test_returns_the_first_clean_report(self, stores: Stores) -> None:
        stores.placed("c", 5)
        report = await wait_for_clean([live()], stores.collections, REGIONS, within_s=5)
        assert report.clean
        assert stores.regions["region_1"].point_reads == 1

    async def test_gives_up_with_the_last_report(self, stores: Stores) -> None:
        report = await wait_for_clean(
            [live()], stores.collections, REGIONS, within_s=0.02, every_s=0.005
        )
        assert not report.clean
        assert report.lost == 2
        assert stores.regions["region_1"].point_reads > 1

    async def test_a_store_too_slow_to_answer_is_read_again(self, stores: Stores) -> None:
        stores.placed("c", 5)
        region_1 = stores.regions["region_1"]
        original = region_1.find_one

        async def slow_once(query: Document, projection: Mapping[str, int]) -> Document | None:
            if region_1.point_reads == 0:
                region_1.point_reads += 1
                raise ServerSelectionTimeoutError("no servers found yet")
            return await original(query, projection)

        region_1.find_one = slow_once  # type: ignore[method-assign]
        report = await wait_for_clean([live()], stores.collections, REGIONS, within_s=5)
        assert report.clean

    async def test_a_store_unreadable_until_the_deadline_raises(self, stores: Stores) -> None:
        stores.regions["region_1"].find_one = _refuse  # type: ignore[method-assign]
        with pytest.raises(ServerSelectionTimeoutError):
            await wait_for_clean(
                [live()], stores.collections, REGIONS, within_s=0.02, every_s=0.005
            )

    async def test_audits_again_until_the_stores_converge(self, stores: Stores) -> None:
        stores.live("region_1", "c", 5)
        region_3 = stores.regions["region_3"]
        original = region_3.find_one

        async def converging(query: Document, projection: Mapping[str, int]) -> Document | None:
            if region_3.point_reads == 2:  # the replica catches up before the third audit
                stores.live("region_3", "c", 5)
            return await original(query, projection)

        region_3.find_one = converging  # type: ignore[method-assign]
        report = await wait_for_clean(
            [live()], stores.collections, REGIONS, within_s=5, every_s=0.001
        )
        assert report.clean
        assert region_3.point_reads == 3


FIELDS = {
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 14409,
    "customer_city": "franca",
    "customer_state": "SP",
}


def full(customer_id: str = "c", version: int = 5, **changes: Any) -> Expected:
    """An expectation with every field, as the chaos load records it."""
    return Expected(customer_id, version, deleted=False, fields={**FIELDS, **changes})


class TestEveryField:
    def put(self, stores: Stores, home: str, version: int = 5, **changes: Any) -> None:
        stores.placed("c", version, home)
        for region in REGIONS.placement_of_home(home):
            stores.regions[region].docs["c"].update({**FIELDS, **changes})

    async def test_the_final_fields_in_the_placement_are_clean(self, stores: Stores) -> None:
        self.put(stores, "region_1")
        report = await stores.audit(full())
        assert report.clean, report

    async def test_another_value_at_the_final_version_is_mismatched(self, stores: Stores) -> None:
        self.put(stores, "region_1", customer_city="ribeirao preto")
        report = await stores.audit(full())
        assert (report.mismatched, report.clean) == (2, False)
        assert report.examples["mismatched"] == [
            "c@region_1 differs in customer_city",
            "c@region_3 differs in customer_city",
        ]

    async def test_the_placement_comes_from_the_zip_not_the_answered_home(
        self, stores: Stores
    ) -> None:
        self.put(stores, "region_1")  # where a wrong answer would have put it
        expected = full(customer_zip_code_prefix=45000)  # a region_2 zip
        report = await stores.audit(
            Expected("c", 5, deleted=False, home="region_1", fields=expected.fields)
        )
        assert report.lost == 1  # region_2, home by the zip, holds only a tombstone
        assert report.duplicated == 1  # region_3 holds it live outside the placement


class TestStrays:
    async def test_a_live_customer_nobody_acknowledged_is_a_stray(self, stores: Stores) -> None:
        stores.placed("run-1-a", 5)
        stores.placed("run-1-b", 6)  # refused, yet applied
        stores.placed("other-c", 7)  # another run's: not under the prefix
        stores.deleted("run-1-d", 8)  # only tombstones: not live anywhere
        report = await audit([live("run-1-a")], stores.collections, REGIONS, stray_prefix="run-1-")
        assert report.strays == 2
        assert sorted(report.examples["strays"]) == ["run-1-b@region_1", "run-1-b@region_3"]
        assert not report.clean

    async def test_no_prefix_looks_for_no_strays(self, stores: Stores) -> None:
        stores.placed("run-1-b", 6)
        report = await stores.audit()
        assert (report.strays, report.clean) == (0, True)
