"""A repair pass over fake stores: what it publishes again, tombstones, records and counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from regionstore_recovery.digests import summarize
from regionstore_recovery.repair import (
    ID_FIRST,
    Options,
    Pacer,
    Repairer,
    Report,
    copy_of,
    windows,
)
from regionstore_recovery.repair_loop import RepairLoop
from regionstore_shared.audit_trail import AuditAction, AuditEvent, AuditUnavailableError
from regionstore_shared.documents import Collection
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.schemas import Action, Command, DeleteCustomer, UpsertCustomer
from regionstore_shared.status import NodeStatus

REGIONS = RegionMap(DEFAULT_REGIONS)
NOW = 2_000_000_000.0
LONG_AGO = datetime.fromtimestamp(NOW - 3600, UTC)


class FakeCursor:
    def __init__(
        self, documents: list[dict[str, Any]], owner: FakeCollection | None = None
    ) -> None:
        self._documents = documents
        self._owner = owner
        self.closed = False

    def sort(self, key: str, direction: int) -> FakeCursor:
        assert (key, direction) == ("_id", 1)
        return FakeCursor(sorted(self._documents, key=lambda d: d["_id"]), self._owner)

    def batch_size(self, count: int) -> FakeCursor:
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        taken = self._documents[:length]
        self._documents = self._documents[len(taken) :]
        if self._owner is not None and taken:
            self._owner.pages += 1
        return taken

    async def close(self) -> None:
        self.closed = True

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for document in self._documents:
            yield document


TESTS = {
    "$gt": lambda key, value: key is not None and key > value,
    "$gte": lambda key, value: key is not None and key >= value,
    "$lt": lambda key, value: key is not None and key < value,
    "$in": lambda key, value: key in value,
}


def matches(document: dict[str, Any], query: dict[str, Any]) -> bool:
    """The part of MongoDB's query language the repair speaks: ranges, $in, equality, $or."""
    for name, condition in query.items():
        if name == "$or":
            if not any(matches(document, branch) for branch in condition):
                return False
        elif isinstance(condition, dict):
            value = document.get(name)
            if not all(TESTS[op](value, bound) for op, bound in condition.items()):
                return False
        elif document.get(name) != condition:
            return False
    return True


class FakeCollection:
    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = {d["_id"]: d for d in documents}
        self.requests = 0
        self.pages = 0
        self.aggregations = 0
        self.indexed = False

    def find(self, query: dict[str, Any], projection: Any = None) -> FakeCursor:
        self.requests += 1
        return FakeCursor(self._matching(query), self)

    async def aggregate(self, pipeline: list[dict[str, Any]]) -> FakeCursor:
        self.aggregations += 1
        match, group = pipeline[0]["$match"], pipeline[1]["$group"]
        assert match["_deleted"] is False
        prefix = group["_id"]["b"]["$substrBytes"][2]
        copies = [copy_of(d) for d in self._matching(match)]
        return FakeCursor(
            [
                {"_id": {"b": bucket, "h": home}, "n": n, "s1": s1, "s2": s2, "m": m}
                for bucket, groups in summarize(copies, prefix).items()
                for home, (n, s1, s2, m) in groups.items()
            ]
        )

    def _matching(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in self.documents.values() if matches(d, query)]

    async def create_indexes(self, models: list[Any]) -> None:
        self.indexed = True

    async def index_information(self) -> dict[str, Any]:
        return {}


def doc(
    customer_id: str,
    version: int,
    *,
    home: str | None = "region_2",
    deleted: bool = False,
    zip_prefix: int = 45000,
    applied: datetime = LONG_AGO,
    command_id: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": customer_id,
        "_v": version,
        "_deleted": deleted,
        "_cmd": command_id or str(uuid.uuid5(uuid.NAMESPACE_OID, f"{customer_id}{version}")),
        "_applied_at": applied,
    }
    if home is not None:
        document["_home"] = home
    if not deleted:
        document |= {
            "customer_unique_id": "0" * 32,
            "customer_zip_code_prefix": zip_prefix,
            "customer_city": "salvador",
            "customer_state": "BA",
        }
    return document


class Sinks:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.published: list[Command] = []
        self.tombstoned: list[tuple[Command, str]] = []
        self.events: list[AuditEvent] = []
        self.trail_down = False
        self.publish_refusals = 0

    async def publish(self, commands: Sequence[Command]) -> None:
        if self.publish_refusals:
            self.publish_refusals -= 1
            raise TimeoutError(f"{len(commands)} repair commands not acknowledged in time")
        self.log.append("publish")
        self.published += commands

    async def tombstone(self, items: Sequence[tuple[Command, str]]) -> int:
        self.log.append("tombstone")
        self.tombstoned += items
        return len(items)

    async def record(self, event: AuditEvent) -> None:
        if self.trail_down:
            raise AuditUnavailableError(event, None)
        self.log.append("audit")
        self.events.append(event)


def repairer(sinks: Sinks, options: Options | None = None, **stores: FakeCollection) -> Repairer:
    collections = {r: stores.get(r, FakeCollection()) for r in REGIONS.names}
    return Repairer(
        collections=cast(dict[str, Collection], collections),
        regions=REGIONS,
        publisher=sinks,
        tombstones=sinks,
        trail=sinks,
        options=options or Options(prefix=1, page=2, grace_s=60, retry_after_s=0),
        clock=lambda: NOW,
    )


def region_2_customers(count: int) -> list[dict[str, Any]]:
    return [doc(f"c{i:03d}", 100 + i) for i in range(count)]


class TestWipedRegion:
    async def test_every_missing_customer_is_published_again_as_it_was_written(self) -> None:
        sinks = Sinks()
        held = region_2_customers(5)
        report = await repairer(sinks, region_1=FakeCollection(*held)).run()

        assert report.found == {"region_2": {"missing": 5}}
        assert report.republished == 5
        by_id = {c.key: c for c in sinks.published}
        for document in held:
            command = by_id[document["_id"]]
            assert isinstance(command, UpsertCustomer)
            assert command.republished
            assert command.version == document["_v"]
            assert str(command.command_id) == document["_cmd"]
            assert command.home_region == "region_2"
            assert {t.region for t in command.targets if t.action is Action.UPSERT} == {
                "region_2",
                "region_1",
            }
        assert sinks.tombstoned == []

    async def test_the_audit_trail_hears_of_the_repairs_before_they_are_made(self) -> None:
        sinks = Sinks()
        await repairer(sinks, region_1=FakeCollection(*region_2_customers(3))).run()
        assert sinks.log == ["audit", "publish", "tombstone"]
        (event,) = sinks.events
        assert event.action is AuditAction.CUSTOMER_REPAIR
        assert event.target == "region_2"
        assert event.detail == {"customers": 3, "republished": 3, "tombstoned": 0}

    async def test_a_batch_is_repaired_at_a_time(self) -> None:
        sinks = Sinks()
        # A bucket per customer, a window per bucket.
        options = Options(prefix=4, page=2, grace_s=0, batch=2, window=1)
        await repairer(sinks, options, region_1=FakeCollection(*region_2_customers(5))).run()
        assert [e.detail["customers"] for e in sinks.events] == [2, 2, 1]

    async def test_a_batch_is_a_whole_window(self) -> None:
        sinks = Sinks()
        options = Options(prefix=4, page=2, grace_s=0, batch=2, window=3)
        await repairer(sinks, options, region_1=FakeCollection(*region_2_customers(5))).run()
        assert [e.detail["customers"] for e in sinks.events] == [3, 2]

    async def test_every_batch_is_repaired_in_order_each_after_its_event(self) -> None:
        sinks = Sinks()
        options = Options(prefix=4, page=2, grace_s=0, batch=1, window=1)
        held = region_2_customers(4)
        await repairer(sinks, options, region_1=FakeCollection(*held)).run()
        assert sinks.log == ["audit", "publish", "tombstone"] * 4
        assert [c.key for c in sinks.published] == [d["_id"] for d in held]

    async def test_a_dry_run_changes_nothing(self) -> None:
        sinks = Sinks()
        report = await repairer(sinks, region_1=FakeCollection(*region_2_customers(4))).run(
            dry_run=True
        )
        assert report.found == {"region_2": {"missing": 4}}
        assert (sinks.log, report.republished) == ([], 0)

    async def test_a_trail_that_cannot_be_written_stops_the_repair(self) -> None:
        sinks = Sinks()
        sinks.trail_down = True
        report = await repairer(sinks, region_1=FakeCollection(*region_2_customers(2))).run()
        assert (sinks.published, report.failed) == ([], 2)

    async def test_a_publishing_round_refused_once_is_tried_again(self) -> None:
        sinks = Sinks()
        sinks.publish_refusals = 2
        report = await repairer(sinks, region_1=FakeCollection(*region_2_customers(3))).run()
        assert (len(sinks.published), report.republished, report.failed) == (3, 3, 0)

    async def test_a_publishing_round_refused_every_time_is_left_to_the_next_pass(self) -> None:
        sinks = Sinks()
        sinks.publish_refusals = 3
        report = await repairer(sinks, region_1=FakeCollection(*region_2_customers(3))).run()
        assert (sinks.published, report.republished, report.failed) == ([], 0, 3)


class TestRestoredFromAnOldBackup:
    async def test_an_older_copy_is_repaired_by_the_newest_write(self) -> None:
        sinks = Sinks()
        report = await repairer(
            sinks,
            region_2=FakeCollection(doc("a1", 7)),
            region_1=FakeCollection(doc("a1", 5)),
        ).run()
        assert report.found == {"region_1": {"older": 1}}
        (command,) = sinks.published
        assert command.version == 7

    async def test_a_live_copy_outside_the_placement_is_tombstoned_at_the_newest_version(
        self,
    ) -> None:
        sinks = Sinks()
        newest = doc("a1", 9)
        report = await repairer(
            sinks,
            region_2=FakeCollection(newest),
            region_1=FakeCollection(newest),
            region_3=FakeCollection(doc("a1", 4, home="region_3", zip_prefix=75000)),
        ).run()
        assert report.found == {"region_3": {"outside": 1}}
        assert sinks.published == []
        ((command, region),) = sinks.tombstoned
        assert (region, command.version, command.key) == ("region_3", 9, "a1")

    async def test_a_live_copy_after_a_delete_is_deleted_again(self) -> None:
        sinks = Sinks()
        deleted = doc("a1", 9, home=None, deleted=True)
        report = await repairer(
            sinks,
            region_2=FakeCollection(doc("a1", 5)),
            region_1=FakeCollection(deleted),
            region_3=FakeCollection(deleted),
        ).run()
        assert report.found == {"region_2": {"deleted": 1}}
        (command,) = sinks.published
        assert isinstance(command, DeleteCustomer)
        assert (command.version, command.republished) == (9, True)
        assert str(command.command_id) == deleted["_cmd"]
        assert [(c.key, r) for c, r in sinks.tombstoned] == [("a1", "region_2")]

    async def test_a_move_left_only_as_tombstones_is_reported_never_acted_on(self) -> None:
        sinks = Sinks()
        report = await repairer(
            sinks,
            region_1=FakeCollection(doc("a1", 9, home="region_3", deleted=True)),
            region_2=FakeCollection(doc("a1", 5)),
        ).run()
        assert report.found["region_1"] == {"lost": 1}
        assert sinks.log == []


class TestWhatAPassLeaves:
    async def test_a_customer_written_within_the_grace_period_waits_for_the_next_pass(
        self,
    ) -> None:
        sinks = Sinks()
        recent = doc("a1", 5, applied=datetime.fromtimestamp(NOW - 10, UTC))
        report = await repairer(sinks, region_1=FakeCollection(recent)).run()
        assert (report.settling, report.found, sinks.log) == (1, {}, [])

    async def test_a_copy_stamped_by_a_clock_a_day_ahead_is_repaired_now(self) -> None:
        sinks = Sinks()
        ahead = doc("a1", 5, applied=datetime.fromtimestamp(NOW + 86_400, UTC))
        report = await repairer(sinks, region_1=FakeCollection(ahead)).run()
        assert (report.settling, report.found) == (0, {"region_2": {"missing": 1}})
        assert report.republished == 1

    async def test_only_the_named_regions_copies_are_repaired(self) -> None:
        sinks = Sinks()
        report = await repairer(
            sinks,
            region_2=FakeCollection(doc("a1", 7)),
            region_1=FakeCollection(doc("a1", 5), doc("b1", 3)),
        ).run(only="region_1")
        assert report.found == {"region_1": {"older": 1}}
        assert [c.key for c in sinks.published] == ["a1"]

    async def test_a_differing_bucket_is_read_in_pages(self) -> None:
        sinks = Sinks()
        region_1 = FakeCollection(*region_2_customers(5))
        report = await repairer(sinks, region_1=region_1).run(dry_run=True)
        assert report.summed == {"region_1": 5, "region_2": 0, "region_3": 0}
        assert report.copies_read == {"region_1": 5, "region_2": 0, "region_3": 0}
        assert (region_1.requests, region_1.pages) == (1, 3)  # one query, pages of 2, 2, 1

    async def test_agreeing_regions_are_compared_by_their_sums_alone(self) -> None:
        sinks = Sinks()
        held = region_2_customers(4)
        region_2 = FakeCollection(*held)
        report = await repairer(sinks, region_2=region_2, region_1=FakeCollection(*held)).run()
        assert (report.buckets, report.buckets_differing, report.diverging) == (1, 0, 0)
        assert sinks.log == []
        assert (region_2.aggregations, region_2.requests) == (len(ID_FIRST), 0)
        assert report.copies_read == {}

    async def test_a_shorter_id_and_the_ids_it_starts_are_different_buckets(self) -> None:
        sinks = Sinks()
        options = Options(prefix=3, page=10, grace_s=60)
        report = await repairer(
            sinks,
            options,
            region_2=FakeCollection(doc("ab", 5), doc("abc1", 6)),
            region_1=FakeCollection(doc("abc1", 6)),
        ).run()
        assert report.found == {"region_1": {"missing": 1}}
        assert [c.key for c in sinks.published] == ["ab"]

    async def test_a_pass_told_to_stop_stops_after_the_window(self) -> None:
        sinks = Sinks()
        held = [doc(f"{letter}1", 5) for letter in "abc"]

        async def going() -> bool:
            return False

        options = Options(prefix=1, page=2, grace_s=60, window=2)
        report = await repairer(sinks, options, region_1=FakeCollection(*held)).run(going=going)
        assert (report.complete, report.buckets, report.buckets_differing) == (False, 3, 2)
        assert [c.key for c in sinks.published] == ["a1", "b1"]

    async def test_consecutive_differing_buckets_are_read_as_one_range(self) -> None:
        sinks = Sinks()
        region_1 = FakeCollection(*region_2_customers(6))  # c000..c005, buckets c000..c005
        region_2 = FakeCollection()
        options = Options(prefix=4, page=100, grace_s=60)
        report = await repairer(sinks, options, region_1=region_1, region_2=region_2).run()
        assert report.found == {"region_2": {"missing": 6}}
        assert (report.buckets, report.buckets_differing) == (6, 6)
        assert (region_1.requests, region_2.requests) == (1, 1)

    async def test_an_agreeing_bucket_between_two_differing_ones_is_never_read(self) -> None:
        sinks = Sinks()
        agreeing = doc("b1", 5)
        region_1 = FakeCollection(doc("a1", 5), agreeing, doc("c1", 5))
        region_2 = FakeCollection(agreeing)
        options = Options(prefix=1, page=100, grace_s=60)
        report = await repairer(sinks, options, region_1=region_1, region_2=region_2).run()
        assert report.copies_read == {"region_1": 2, "region_2": 0, "region_3": 0}
        assert region_1.requests == 2
        assert [c.key for c in sinks.published] == ["a1", "c1"]

    async def test_copies_between_the_window_s_buckets_are_not_its_own(self) -> None:
        sinks = Sinks()
        # b1 is a tombstone alone: its bucket holds no live copy, so no region sums it, yet
        # it lies in the range read for buckets a and c.
        region_1 = FakeCollection(doc("a1", 5), doc("b1", 9, deleted=True, home=None), doc("c1", 5))
        options = Options(prefix=1, page=100, grace_s=60)
        report = await repairer(sinks, options, region_1=region_1).run()
        assert report.buckets == 2
        assert report.found == {"region_2": {"missing": 2}}
        assert [c.key for c in sinks.published] == ["a1", "c1"]

    @pytest.mark.timeout(30)  # without the overlap the pass would wait for ever
    async def test_the_next_window_is_read_while_a_batch_is_published(self) -> None:
        read_on = asyncio.Event()

        class Watched(FakeCollection):
            def find(self, query: dict[str, Any], projection: Any = None) -> FakeCursor:
                if query["_id"].get("$gte") == "b":
                    read_on.set()
                return super().find(query, projection)

        class Waiting(Sinks):
            async def publish(self, commands: Sequence[Command]) -> None:
                await read_on.wait()  # never set unless the pass reads on meanwhile
                await super().publish(commands)

        sinks = Waiting()
        region_1 = Watched(doc("a1", 5), doc("b1", 5), doc("c1", 5))
        options = Options(prefix=1, page=100, grace_s=60, batch=1, window=1)
        report = await repairer(sinks, options, region_1=region_1).run()
        assert report.republished == 3
        assert [c.key for c in sinks.published] == ["a1", "b1", "c1"]

    async def test_a_pass_that_fails_leaves_no_batch_behind(self) -> None:
        started = asyncio.Event()
        stopped: list[bool] = []

        class Failing(FakeCollection):
            def find(self, query: dict[str, Any], projection: Any = None) -> FakeCursor:
                if query["_id"].get("$gte") == "b":
                    raise ConnectionError("store gone")
                return super().find(query, projection)

        class Hanging(Sinks):
            async def publish(self, commands: Sequence[Command]) -> None:
                started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    stopped.append(True)
                    raise

        sinks = Hanging()
        region_1 = Failing(doc("a1", 5), doc("b1", 5))
        options = Options(prefix=1, page=100, grace_s=60, batch=1, window=1)
        with pytest.raises(ConnectionError):
            await repairer(sinks, options, region_1=region_1).run()
        assert started.is_set()
        assert stopped == [True]

    async def test_of_a_wiped_region_only_the_groups_it_held_are_read(self) -> None:
        sinks = Sinks()
        # Homes: region_1's customers live in region_1 and region_3, region_2's in region_2
        # and region_1, region_3's in region_3 and region_2.
        own_1 = [doc(f"a{i}", 5, home="region_1", zip_prefix=1310) for i in range(4)]
        own_2 = [doc(f"b{i}", 5) for i in range(2)]
        own_3 = [doc(f"c{i}", 5, home="region_3", zip_prefix=75000) for i in range(3)]
        region_1 = FakeCollection(*own_1, *own_2)
        region_3 = FakeCollection(*own_1, *own_3)
        options = Options(prefix=1, page=100, grace_s=60)
        report = await repairer(sinks, options, region_1=region_1, region_3=region_3).run()
        assert report.found == {"region_2": {"missing": 5}}
        assert report.copies_read == {"region_1": 2, "region_2": 0, "region_3": 3}
        assert sorted(c.key for c in sinks.published) == ["b0", "b1", "c0", "c1", "c2"]

    async def test_a_copy_in_a_group_that_agrees_is_read_before_a_repair(self) -> None:
        sinks = Sinks()
        # The customer moved from region_2's home to region_1's at version 7; region_2, then
        # restored from a backup older than the move, holds it live at version 5, as a
        # customer of region_2. Read alone, that copy would look missing in region_1.
        moved = doc("m1", 7, home="region_1", zip_prefix=1310)
        region_1 = FakeCollection(moved)
        region_2 = FakeCollection(doc("m1", 5))
        region_3 = FakeCollection(moved)
        options = Options(prefix=1, page=100, grace_s=60)
        report = await repairer(
            sinks, options, region_1=region_1, region_2=region_2, region_3=region_3
        ).run()
        assert report.found == {"region_2": {"outside": 1}}
        assert sinks.published == []
        ((command, region),) = sinks.tombstoned
        assert (command.key, command.version, region) == ("m1", 7, "region_2")

    async def test_the_repair_publishes_the_copy_it_read(self) -> None:
        sinks = Sinks()
        region_1 = FakeCollection(doc("a1", 5, zip_prefix=45123))
        options = Options(prefix=1, page=100, grace_s=60)
        await repairer(sinks, options, region_1=region_1).run()
        (command,) = sinks.published
        assert isinstance(command, UpsertCustomer)
        assert command.customer.customer_zip_code_prefix == 45123
        assert region_1.requests == 1  # the range, and no second read of the customer


G2 = frozenset({"region_2"})


class TestWindows:
    def test_consecutive_differing_buckets_make_one_window(self) -> None:
        sizes = dict.fromkeys("abcde", 1)
        differing = dict.fromkeys("abcde", G2)
        assert windows(list("abcde"), differing, sizes, 10) == [list("abcde")]

    def test_an_agreeing_bucket_ends_a_window(self) -> None:
        sizes = dict.fromkeys("abde", 1)
        differing = dict.fromkeys("abde", G2)
        assert windows(list("abcde"), differing, sizes, 10) == [list("ab"), list("de")]

    def test_buckets_differing_in_other_groups_are_other_windows(self) -> None:
        sizes = dict.fromkeys("abcd", 1)
        differing = {"a": G2, "b": G2, "c": None, "d": frozenset({"region_1"})}
        assert windows(list("abcd"), differing, sizes, 10) == [list("ab"), ["c"], ["d"]]

    def test_a_window_holds_at_most_its_limit_of_copies(self) -> None:
        sizes = {"a": 4, "b": 4, "c": 4, "d": 1}
        differing = dict.fromkeys("abcd", G2)
        assert windows(list("abcd"), differing, sizes, 8) == [list("ab"), list("cd")]

    def test_a_bucket_larger_than_the_limit_is_a_window_alone(self) -> None:
        sizes = {"a": 1, "b": 50, "c": 1}
        differing = dict.fromkeys("abc", G2)
        assert windows(list("abc"), differing, sizes, 8) == [["a"], ["b"], ["c"]]

    def test_nothing_differing_reads_nothing(self) -> None:
        assert windows(list("abc"), {}, {}, 8) == []


class TestPacer:
    def test_unpaced_never_waits(self) -> None:
        assert Pacer(None).delay(10_000) == 0.0

    def test_waits_what_the_copies_cost_at_the_pace(self) -> None:
        pacer = Pacer(1000.0, clock=lambda: 50.0)
        assert pacer.delay(500) == pytest.approx(0.5)
        assert pacer.delay(500) == pytest.approx(1.0)


class FakeLease:
    def __init__(self, held: bool) -> None:
        self.held = held

    async def hold(self) -> bool:
        return self.held


class FakeStatuses:
    def __init__(self, **statuses: NodeStatus) -> None:
        self.statuses = statuses

    async def all(self) -> dict[str, NodeStatus]:
        return dict(self.statuses)


class FakeBacklogs:
    def __init__(self, parked: int = 0, lag: int | None = 0) -> None:
        self.parked = parked
        self.lag = lag

    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]:
        return dict.fromkeys(regions, self.parked)

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]:
        return dict.fromkeys(groups, self.lag)


class TestRepairLoop:
    region_1: FakeCollection

    def loop(
        self,
        lease: FakeLease,
        statuses: FakeStatuses,
        sinks: Sinks,
        backlogs: FakeBacklogs | None = None,
    ) -> RepairLoop:
        self.region_1 = region_1 = FakeCollection(*region_2_customers(2))
        collections = cast(dict[str, Collection], {"region_1": region_1})
        return RepairLoop(
            repairer(sinks, region_1=region_1),
            lease=lease,
            statuses=statuses,
            backlogs=backlogs or FakeBacklogs(),
            consumers={"writer": "regionstore.writer"},
            max_lag=100,
            collections=collections,
        )

    @pytest.mark.parametrize(
        "backlogs",
        [FakeBacklogs(parked=1), FakeBacklogs(lag=101), FakeBacklogs(lag=None)],
        ids=["parked", "lagging", "lag unknown"],
    )
    async def test_no_pass_while_commands_are_on_their_way(self, backlogs: FakeBacklogs) -> None:
        sinks = Sinks()
        loop = self.loop(
            FakeLease(True), FakeStatuses(region_1=NodeStatus.AVAILABLE), sinks, backlogs
        )
        assert await loop.round() is None
        assert sinks.log == []

    async def test_a_process_without_the_lease_makes_no_pass(self) -> None:
        sinks = Sinks()
        assert await self.loop(FakeLease(False), FakeStatuses(), sinks).round() is None
        assert sinks.log == []

    async def test_no_pass_while_a_region_is_not_available(self) -> None:
        sinks = Sinks()
        statuses = FakeStatuses(region_2=NodeStatus.UNAVAILABLE)
        assert await self.loop(FakeLease(True), statuses, sinks).round() is None
        assert sinks.log == []

    async def test_the_lease_holder_makes_the_indexes_and_repairs(self) -> None:
        sinks = Sinks()
        report = await self.loop(FakeLease(True), FakeStatuses(), sinks).round()
        assert isinstance(report, Report)
        assert report.republished == 2
        # A region started empty has no indexes until someone makes them.
        assert self.region_1.indexed
