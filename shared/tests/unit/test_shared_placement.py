"""The placement table: a property test over moves, deletes and replays for 3 to 12 regions.

The model stores are version-guarded like the real ones (insert when absent, replace when
older). Two consumers, a writer and a replicator, each with its own table, read the same
partition in batches; a batch may fail after writing part of its targets and is then routed and
applied again; a region may be down, its targets parked and replayed at the end in any order;
the gateways' clocks disagree (versions in any order), and some writes are retried (republished
later, or their first publishing landing after the retry, or their first attempt lost with its
gateway). Every command carries ``after``, an offset its partition had reached when it was made
(at most where it first stands), the same on each of its publishings. Whatever happens, every
region ends as the write acknowledged last says: the record in its placement, no live copy
anywhere else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from regionstore_shared.domain import delete_command, upsert_command
from regionstore_shared.placement import REMEMBERED, PlacementTable, lifted, placed_by, targets_of
from regionstore_shared.regions import RegionMap, RegionSpec
from regionstore_shared.schemas import Action, Applier, Command, Customer, Target

CUSTOMER = "c1"


def region_map(count: int, replicas: int) -> RegionMap:
    width = 90000 // count
    names = [f"r{i}" for i in range(count)]
    return RegionMap(
        RegionSpec(
            name=name,
            zip_min=1000 + i * width,
            zip_max=1000 + (i + 1) * width - 1,
            replicas=tuple(names[(i + k) % count] for k in range(1, replicas + 1)),
        )
        for i, name in enumerate(names)
    )


def customer(zip_prefix: int) -> Customer:
    return Customer(
        customer_id=CUSTOMER,
        customer_unique_id="0" * 32,
        customer_zip_code_prefix=zip_prefix,
        customer_city="sao paulo",
        customer_state="SP",
    )


def home_zip(regions: RegionMap, index: int) -> int:
    return regions.specs[index % len(regions.names)].zip_min


def upsert(regions: RegionMap, home: int, version: int) -> Command:
    """An upsert homing the customer in the ``home``-th region."""
    return upsert_command(
        customer(home_zip(regions, home)), regions=regions, version=version, issued_at_ms=0
    )


@dataclass
class Stores:
    """Version-guarded regions: region -> (version, live, command id)."""

    docs: dict[str, tuple[int, bool, str]] = field(default_factory=dict)
    writes: int = 0

    def apply(self, command: Command, target: Target) -> None:
        self.writes += 1
        held = self.docs.get(target.region)
        if held is None or held[0] < command.version:
            live = target.action is Action.UPSERT
            self.docs[target.region] = (command.version, live, str(command.command_id))


@dataclass(frozen=True)
class Scenario:
    """A region map, the partition's order (the order of acknowledgement), and the faults."""

    regions: RegionMap
    delivered: list[Command]
    batch: int
    failures: list[bool]
    partial: int
    down: set[str]
    park_order: random.Random


def republish(command: Command) -> Command:
    return command.model_copy(update={"republished": True})


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Writes acknowledged one after another by gateways whose clocks disagree (any versions),
    some retried: a republished copy later in the partition, a first publishing that lands
    late, after its republished copy and newer writes, or a first attempt that never landed,
    whose retry stands after writes of gateways whose clocks ran ahead, some appended before it
    was made and some after."""
    count = draw(st.integers(3, 12))
    regions = region_map(count, draw(st.integers(1, min(2, count - 1))))
    writes = draw(
        st.lists(
            st.one_of(st.integers(0, count - 1), st.none()),  # a home region, or a delete
            min_size=1,
            max_size=8,
        )
    )
    versions = draw(
        st.lists(st.integers(1, 2**40), min_size=len(writes), max_size=len(writes), unique=True)
    )
    lost = draw(st.lists(st.integers(0, len(writes) - 1), max_size=2, unique=True))
    if draw(st.booleans()):
        # Their gateways' clocks ran behind every other: they hold the lowest versions.
        others = sorted((i for i in range(len(writes)) if i not in lost), key=versions.__getitem__)
        for at, version in zip([*lost, *others], sorted(versions), strict=True):
            versions[at] = version
    commands: list[Command] = [
        delete_command(CUSTOMER, regions=regions, version=v, issued_at_ms=0)
        if home is None
        else upsert_command(
            customer(home_zip(regions, home)), regions=regions, version=v, issued_at_ms=0
        )
        for v, home in zip(versions, writes, strict=True)
    ]
    delivered = list(commands)
    retried = [at for at in range(len(commands)) if at not in lost]
    # At most REMEMBERED republished versions: a table knows a late first publishing by them.
    retries = st.lists(st.sampled_from(retried), max_size=REMEMBERED - len(lost), unique=True)
    for at in draw(retries) if retried else []:
        command = commands[at]
        index = delivered.index(command)
        if draw(st.booleans()):
            delivered.insert(draw(st.integers(index + 1, len(delivered))), republish(command))
        else:
            delivered[index] = republish(command)
            delivered.insert(draw(st.integers(index + 1, len(delivered))), command)
    for at in lost:
        delivered[delivered.index(commands[at])] = republish(commands[at])
    return Scenario(
        regions=regions,
        delivered=made_when(draw, delivered, {str(commands[at].command_id) for at in lost}),
        batch=draw(st.integers(1, 4)),
        failures=draw(st.lists(st.booleans(), max_size=len(delivered))),
        partial=draw(st.integers(0, 3)),
        down=draw(st.sets(st.sampled_from(regions.names), max_size=count - 1)),
        park_order=draw(st.randoms(use_true_random=False)),
    )


def made_when(draw: st.DrawFn, delivered: list[Command], lost: set[str]) -> list[Command]:
    """Every publishing of a write stamped with the same ``after``: at most where the write
    first stands (it was made before any publishing), or none (a gateway that knew no offset);
    always one for a write whose first attempt was lost, the case it is for."""
    first: dict[str, int] = {}
    for position, command in enumerate(delivered):
        first.setdefault(str(command.command_id), position)
    after = {
        write: draw(
            st.integers(0, position) if write in lost else st.none() | st.integers(0, position)
        )
        for write, position in first.items()
    }
    return [c.model_copy(update={"after": after[str(c.command_id)]}) for c in delivered]


def consume(
    role: Applier,
    delivered: list[Command],
    stores: Stores,
    parked: list[tuple[Command, Target]],
    *,
    batch: int,
    failures: list[bool],
    partial: int,
    down: set[str],
    unknown: tuple[str, ...] = (),
) -> None:
    """One consumer group reading the partition in batches; a failed batch is replayed."""
    table = PlacementTable({}, unknown=unknown)
    start, attempt = 0, 0
    while start < len(delivered):
        chunk = delivered[start : start + batch]
        routed = [
            (c.model_copy(update={"version": version}), t)
            for position, c in enumerate(chunk, start)
            for version, targets in [table.route(c, position)]
            for t in targets
            if t.role is role
        ]
        # Each failure is used once, so every batch is committed in the end.
        failed = attempt < len(failures) and failures[attempt]
        attempt += 1
        for done, (command, target) in enumerate(routed):
            if failed and done >= partial:
                break
            if target.region in down:
                parked.append((command, target))
            else:
                stores.apply(command, target)
        if failed:
            table.discard()
            continue
        table.settle()
        start += batch


def acknowledged_last(delivered: list[Command]) -> Command:
    """What the customer must end as: the reference, with every command id remembered.

    Each write counts once, where it first stands in the partition: a fresh write there was
    acknowledged after every write before it, so it wins. A republished one overlapped the
    writes between its publishings, and wins only if its version is above the current one's,
    or if the current write stands below its ``after``: that one was acknowledged before the
    republished write was made, and a write acknowledged later wins.
    """
    seen: set[str] = set()
    current: Command | None = None
    version = 0
    placed_at = 0
    for position, command in enumerate(delivered):
        if str(command.command_id) in seen:
            continue
        seen.add(str(command.command_id))
        if current is None or command.version > version:
            current, version, placed_at = command, command.version, position
        elif not command.republished or (command.after is not None and placed_at < command.after):
            current, version, placed_at = command, lifted(version, command.version), position
    assert current is not None
    return current


def final_state_holds(regions: RegionMap, last: Command, stores: Stores) -> None:
    placed = placed_by(last, ())
    versions = set()
    for region in regions.names:
        held = stores.docs.get(region)
        if region in placed.regions:
            assert held is not None, f"{region} lost {last}"
            assert held[1:] == (True, str(last.command_id)), f"{region}: {held} for {last}"
            versions.add(held[0])
        else:
            assert held is None or not held[1], f"{region} keeps a live copy {held}"
    assert len(versions) <= 1, f"the placement's regions disagree on the version: {versions}"


def play(scenario: Scenario, stores: Stores, unknown: tuple[str, ...] = ()) -> None:
    """Both consumer groups read the partition, parked targets are replayed, then the check."""
    parked: list[tuple[Command, Target]] = []
    for role in (Applier.WRITER, Applier.REPLICATOR):
        consume(
            role,
            scenario.delivered,
            stores,
            parked,
            batch=scenario.batch,
            failures=scenario.failures,
            partial=scenario.partial,
            down=scenario.down,
            unknown=unknown,
        )
    scenario.park_order.shuffle(parked)
    for command, target in parked:
        stores.apply(command, target)
    final_state_holds(scenario.regions, acknowledged_last(scenario.delivered), stores)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_every_region_ends_as_the_last_acknowledged_write_says(scenario: Scenario) -> None:
    play(scenario, Stores())


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(0, 11))
def test_a_table_started_late_assumes_the_customer_anywhere(
    scenario: Scenario, earlier_home: int
) -> None:
    """Commands from before the table left a record and tombstones in every other region."""
    regions = scenario.regions
    stores = Stores()
    for region in regions.placement(home_zip(regions, earlier_home)):
        stores.docs[region] = (0, True, "earlier")
    play(scenario, stores, unknown=regions.names)


def moves(count: int, replicas: int) -> tuple[int, int]:
    """Store writes for a create and then a move to the next region, with ``count`` regions."""
    regions = region_map(count, replicas)
    table = PlacementTable({}, unknown=())
    create = upsert(regions, 0, 1)
    move = upsert(regions, 1, 2)
    return len(table.route(create).targets), len(table.route(move).targets)


def test_a_write_costs_its_placement_and_the_regions_left_whatever_the_region_count() -> None:
    # One replica: a create writes 2 regions; a move from r0 (r0, r1) to r1 (r1, r2) writes
    # its 2 and tombstones r0, the one region left.
    assert moves(3, 1) == moves(6, 1) == moves(12, 1) == (2, 3)
    assert moves(12, 2) == (3, 4)


def test_a_write_after_a_newer_version_is_lifted_above_it() -> None:
    # The second write's gateway clock is behind: it still stands after the first.
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    first = upsert(regions, 1, 5 << 6 | 3)
    second = upsert(regions, 0, 4 << 6 | 7)
    assert table.route(first).version == first.version
    version, targets = table.route(second)
    assert version == 6 << 6 | 7 == lifted(first.version, second.version)
    assert [(t.region, t.action) for t in targets] == [
        ("r0", Action.UPSERT),
        ("r1", Action.UPSERT),
        ("r2", Action.TOMBSTONE),
    ]
    assert table.get(CUSTOMER) == placed_by(second, ("r1", "r2"), version=version)


def test_a_republished_command_older_than_the_newest_goes_nowhere() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    older = upsert(regions, 0, 4)
    newer = upsert(regions, 1, 5)
    table.route(older)
    table.route(newer)
    assert table.route(republish(older)).targets == ()
    assert table.get(CUSTOMER) is not None
    assert table.get(CUSTOMER).regions == ("r1", "r2")  # type: ignore[union-attr]


def made_after(command: Command, offset: int) -> Command:
    """The command as a gateway makes it once the partition reached ``offset``."""
    return command.model_copy(update={"after": offset})


def test_a_retry_whose_first_attempt_never_landed_is_lifted_over_an_earlier_write() -> None:
    # A gateway whose clock ran a day ahead wrote first (offset 10). The next write was made
    # once its gateway had seen offset 11 reached, and its first attempt died with that
    # gateway: its retry, with the lower version, must still win.
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    ahead = upsert(regions, 0, 900 << 6 | 3)
    table.route(ahead, 10)
    later = made_after(upsert(regions, 1, 5 << 6 | 7), 11)
    version, targets = table.route(republish(later), 14)
    assert version == lifted(ahead.version, later.version)
    assert ("r1", Action.UPSERT) in [(t.region, t.action) for t in targets]
    assert table.get(CUSTOMER).position == 14  # type: ignore[union-attr]
    # Its first attempt, had it landed after all, is the same write at the same place.
    assert table.route(later, 15).version == version


def test_a_retry_is_not_lifted_over_a_write_that_may_have_come_after_its_first_attempt() -> None:
    # The newest write stands at or past where the retried one was made: the retried one's
    # first attempt may stand before it, and a newer write is never overtaken.
    regions = region_map(3, 1)
    for newest_at in (11, 12):
        table = PlacementTable({}, unknown=())
        newer = upsert(regions, 0, 900 << 6 | 3)
        table.route(newer, newest_at)
        retried = made_after(upsert(regions, 1, 5 << 6 | 7), 11)
        assert table.route(republish(retried), 20).targets == ()
        assert table.get(CUSTOMER).regions == ("r0", "r1")  # type: ignore[union-attr]


def test_a_retry_without_an_offset_or_over_a_newest_without_one_keeps_its_version() -> None:
    regions = region_map(3, 1)
    unplaced = PlacementTable({}, unknown=())
    unplaced.route(upsert(regions, 0, 900))  # routed before offsets were kept
    assert unplaced.route(republish(made_after(upsert(regions, 1, 5), 11)), 20).targets == ()
    unstamped = PlacementTable({}, unknown=())
    unstamped.route(upsert(regions, 0, 900), 10)
    assert unstamped.route(republish(upsert(regions, 1, 5)), 20).targets == ()


def test_a_first_publishing_that_lands_after_its_retry_and_a_newer_write_goes_nowhere() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    late = upsert(regions, 0, 9)
    table.route(republish(late))
    newer = upsert(regions, 1, 5)  # a gateway whose clock is behind: lifted above 9
    assert table.route(newer).version > late.version
    assert table.route(late).targets == ()
    assert table.get(CUSTOMER).regions == ("r1", "r2")  # type: ignore[union-attr]


def test_a_customer_remembers_its_last_republished_versions() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    retried = [upsert(regions, 0, v) for v in range(1, REMEMBERED + 2)]
    for command in retried:
        table.route(republish(command))
    held = table.get(CUSTOMER)
    assert held is not None
    assert held.republished == tuple(c.version for c in retried[-REMEMBERED:])


def test_a_lifted_write_replayed_goes_where_and_at_the_version_it_went() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    table.route(upsert(regions, 0, 9))
    behind = upsert(regions, 1, 5)
    routed = table.route(behind)
    table.settle()
    assert table.route(behind) == routed
    assert table.route(republish(behind)) == routed


def test_a_replay_goes_where_the_command_went_the_first_time() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    first = upsert(regions, 0, 1)
    move = upsert(regions, 1, 2)
    table.route(first)
    routed = table.route(move)
    table.settle()
    assert table.route(move) == routed
    assert [(t.region, t.action) for t in routed.targets] == [
        ("r1", Action.UPSERT),
        ("r2", Action.UPSERT),
        ("r0", Action.TOMBSTONE),
    ]


def test_discarded_changes_are_routed_again_from_the_committed_placement() -> None:
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    create = upsert(regions, 0, 1)
    table.route(create)
    table.settle()
    move = upsert(regions, 1, 2)
    table.route(move)
    table.discard()
    assert table.get(CUSTOMER) == placed_by(create, ())
    assert table.changes == {}


def test_a_delete_tombstones_the_placement_all_by_the_replicator() -> None:
    # The writer's share never depends on the table: two groups' tables can then never leave
    # a tombstone to each other.
    regions = region_map(3, 1)
    table = PlacementTable({}, unknown=())
    table.route(upsert(regions, 2, 1))
    routed = table.route(delete_command(CUSTOMER, regions=regions, version=2, issued_at_ms=0))
    assert [(t.region, t.role, t.action) for t in routed.targets] == [
        ("r2", Applier.REPLICATOR, Action.TOMBSTONE),
        ("r0", Applier.REPLICATOR, Action.TOMBSTONE),
    ]
    gone = delete_command(CUSTOMER, regions=regions, version=3, issued_at_ms=0)
    assert table.route(gone).targets == ()


def test_targets_of_keeps_an_upserts_own_appliers() -> None:
    regions = region_map(3, 1)
    command = upsert(regions, 0, 1)
    placed = placed_by(command, ("r2",))
    assert [(t.region, t.role) for t in targets_of(command, placed)] == [
        ("r0", Applier.WRITER),
        ("r1", Applier.REPLICATOR),
        ("r2", Applier.REPLICATOR),
    ]
