"""The version guard of the batch apply, raced against one region's real store.

Many appliers, built as the writer, the replicator and recovery build theirs (each with its own
client, as each service process has), apply the same few customers' upserts and tombstones in
random order, with duplicates and replays, all at once. Whatever the interleaving, every customer
must end as exactly its newest command wrote it, and no reader may ever see a version go back.
The test writes to a database of its own on the store, dropped afterwards, so the running
services never see it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio

from regionstore_recovery.drainer import TargetsIn
from regionstore_shared.apply import (
    BatchApplier,
    BatchOutcome,
    Envelope,
    RegionUnavailableError,
    Rejected,
    Suspicion,
)
from regionstore_shared.clients import MongoClient, mongo_client
from regionstore_shared.clock import HybridClock
from regionstore_shared.documents import (
    APPLIED_AT,
    COMMAND_ID,
    DELETED,
    VERSION,
    Collection,
    live_document,
    tombstone_document,
)
from regionstore_shared.domain import delete_targets, upsert_targets
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
    encode_command,
)
from regionstore_shared.settings import CommonSettings
from regionstore_shared.status import NodeStatus
from tests.regionstore_env import new_id

pytestmark = pytest.mark.integration

REGION = "region_2"
CUSTOMERS = 20
COMMANDS_PER_CUSTOMER = 40
APPLIERS = 18
DELIVERIES_PER_APPLIER = 300
ROLES = ("writer", "replicator", "drainer")
GATEWAYS = 4
# A zip in each region's range: an upsert reaches REGION as the record or as a tombstone.
ZIPS = {"region_1": (1310, "SP"), "region_2": (45000, "BA"), "region_3": (80000, "PR")}
RACE_WITHIN_S = 180
REPLAY_WITHIN_S = 90
RETRY_PAUSE_S = 0.5  # recovery's first pause after a failed batch (retry_min_s)

Selector = Callable[[Command], Iterable[Target]]


class AllAvailable:
    """A status board on which every region is available (the store is up)."""

    def __init__(self, regions: Iterable[str]) -> None:
        self._regions = tuple(regions)

    async def all(self) -> dict[str, NodeStatus]:
        return dict.fromkeys(self._regions, NodeStatus.AVAILABLE)


@dataclass
class KeptParker:
    """A parking topic in memory: what one consumer parked, replayed after the race."""

    parked: list[Envelope] = field(default_factory=list)

    async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None:
        assert region == REGION
        self.parked += envelopes


@dataclass
class KeptDeadLetters:
    """The dead-letter topic, in memory: commands a region refused for good, with the reason."""

    rejected: list[Rejected] = field(default_factory=list)

    async def send_commands(self, region: str, rejected: Sequence[Rejected]) -> None:
        assert region == REGION
        self.rejected += rejected

    def lines(self) -> list[str]:
        """One line per refused command: customer, version, reason."""
        return [
            f"{r.envelope.command.key} v{r.envelope.command.version}: {r.error[:120]}"
            for r in self.rejected
        ]


class RoleIn:
    """What a command consumer of one role applies to REGION (its other regions are not here)."""

    def __init__(self, region: str, role: Applier) -> None:
        self.region = region
        self.role = role

    def __call__(self, command: Command) -> Iterable[Target]:
        return [t for t in command.targets if t.region == self.region and t.role is self.role]


SELECTORS: dict[str, Selector] = {
    "writer": RoleIn(REGION, Applier.WRITER),
    "replicator": RoleIn(REGION, Applier.REPLICATOR),
    "drainer": TargetsIn(REGION),
}


@dataclass
class Racer:
    """One applier, the batches it is handed, and what it could not apply.

    The consumers (writer, replicator) park what they cannot write; a drainer, like recovery,
    has no parker: a batch that fails stays uncommitted and is retried later.
    """

    role: str
    parker: KeptParker | None
    dead_letters: KeptDeadLetters = field(default_factory=KeptDeadLetters)
    batches: list[list[Envelope]] = field(default_factory=list)
    results: list[BatchOutcome] = field(default_factory=list)
    uncommitted: list[Envelope] = field(default_factory=list)
    landed: set[UUID] = field(default_factory=set)

    @property
    def select(self) -> Selector:
        return SELECTORS[self.role]

    def takes(self, command: Command) -> bool:
        return bool(list(self.select(command)))

    async def run(self, applier: BatchApplier, start: asyncio.Event) -> None:
        """Apply every batch; note which commands certainly reached the store."""
        await start.wait()
        for batch in self.batches:
            parked_before = len(self.parker.parked) if self.parker else 0
            refused_before = len(self.dead_letters.rejected)
            try:
                self.results.append(await applier.apply(batch, self.select))
            except RegionUnavailableError:
                self.uncommitted += batch
                continue
            missed = [r.envelope for r in self.dead_letters.rejected[refused_before:]]
            missed += self.parker.parked[parked_before:] if self.parker else []
            missed_ids = {e.command.command_id for e in missed}
            self.landed |= {
                e.command.command_id
                for e in batch
                if self.takes(e.command) and e.command.command_id not in missed_ids
            }

    @property
    def leftovers(self) -> list[Envelope]:
        """What this racer parked or left uncommitted, for recovery to replay."""
        return (self.parker.parked if self.parker else []) + self.uncommitted


@dataclass
class Guarded:
    """The test's own customer collection in REGION, and a factory of appliers over it."""

    regions: RegionMap
    collection: Collection
    open_applier: Callable[[str, KeptParker | None, KeptDeadLetters], BatchApplier]


@pytest_asyncio.fixture(loop_scope="session")
async def guarded(stack: Any) -> AsyncIterator[Guarded]:
    """Appliers over a fresh database on REGION's store; the database is dropped afterwards."""
    settings = CommonSettings()
    database = f"guard_{new_id()}"
    clients: list[MongoClient] = []

    def client() -> MongoClient:
        opened = mongo_client(settings.stores[REGION], settings.store, "tests-store-guard")
        clients.append(opened)
        return opened

    def open_applier(
        role: str, parker: KeptParker | None, dead_letters: KeptDeadLetters
    ) -> BatchApplier:
        return BatchApplier(
            collections={REGION: client()[database][settings.store.collection]},
            status=AllAvailable(settings.region_map.names),
            suspicion=Suspicion(settings.store.suspect_for_s),
            parker=parker,
            dead_letters=dead_letters,
            role=role,
            chunk=settings.store.write_chunk,
        )

    # The test reads and drops with patience: a store busy with the race is not a dead one.
    patient = settings.store.model_copy(update={"socket_timeout_ms": 60_000})
    reader = mongo_client(settings.stores[REGION], patient, "tests-store-guard")
    try:
        yield Guarded(
            settings.region_map, reader[database][settings.store.collection], open_applier
        )
    finally:
        for opened in reversed(clients):
            await opened.close()
        await reader.drop_database(database)
        await reader.close()


def _envelope(command: Command) -> Envelope:
    return Envelope(command, encode_command(command))


def _upsert(
    regions: RegionMap, customer_id: str, version: int, *, home: str, city: str
) -> UpsertCustomer:
    zip_prefix, state = ZIPS[home]
    customer = Customer(
        customer_id=customer_id,
        customer_unique_id=uuid.uuid4().hex,
        customer_zip_code_prefix=zip_prefix,
        customer_city=city,
        customer_state=state,
    )
    return UpsertCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=0,
        targets=upsert_targets(regions, zip_prefix),
        customer=customer,
        home_region=regions.home_of(zip_prefix),
    )


def _delete(regions: RegionMap, customer_id: str, version: int) -> DeleteCustomer:
    return DeleteCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=0,
        targets=delete_targets(regions),
        customer_id=customer_id,
    )


def _histories(regions: RegionMap, rng: random.Random) -> dict[str, list[Command]]:
    """Each customer's commands, oldest first, versioned by several gateways' clocks.

    Each write goes through a random gateway, which has seen the customer's last version (as
    a PATCH reads it first). Upserts move the customer between regions, so REGION gets the
    record or a tombstone, and deletes come in between. Every fourth customer ends deleted;
    every fourth other one is deleted and then created again.
    """
    clocks = [HybridClock(node) for node in range(1, GATEWAYS + 1)]
    histories: dict[str, list[Command]] = {}
    for index in range(CUSTOMERS):
        customer_id = new_id()
        commands: list[Command] = []
        for step in range(COMMANDS_PER_CUSTOMER):
            clock = rng.choice(clocks)
            if commands:
                clock.observe(commands[-1].version)
            version = clock.now()
            if step == COMMANDS_PER_CUSTOMER - 1:
                deleting = index % 4 == 0
            elif step == COMMANDS_PER_CUSTOMER - 2 and index % 4 == 1:
                deleting = True
            else:
                deleting = rng.random() < 0.3
            if deleting:
                commands.append(_delete(regions, customer_id, version))
            else:
                home = rng.choice(list(ZIPS))
                commands.append(_upsert(regions, customer_id, version, home=home, city=f"c{step}"))
        assert all(a.version < b.version for a, b in itertools.pairwise(commands))
        histories[customer_id] = commands
    return histories


def _deal(racers: Sequence[Racer], commands: Sequence[Command], rng: random.Random) -> None:
    """Hand every command to one racer that applies it, then replays and noise to all."""
    streams: list[list[Envelope]] = [[] for _ in racers]
    for command in commands:
        takers = [i for i, racer in enumerate(racers) if racer.takes(command)]
        streams[rng.choice(takers)].append(_envelope(command))
    for stream in streams:
        while len(stream) < DELIVERIES_PER_APPLIER:
            stream.append(_envelope(rng.choice(commands)))
        rng.shuffle(stream)
    for racer, stream in zip(racers, streams, strict=True):
        start = 0
        while start < len(stream):
            size = rng.randint(1, 40)
            racer.batches.append(stream[start : start + size])
            start += size


def _expected_document(command: Command) -> dict[str, Any]:
    (target,) = [t for t in command.targets if t.region == REGION]
    if target.action is Action.TOMBSTONE:
        document = tombstone_document(command)
    else:
        assert isinstance(command, UpsertCustomer)
        document = live_document(command)
    del document[APPLIED_AT]
    return document


async def _held(collection: Collection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    held = {}
    async for document in collection.find({"_id": {"$in": list(ids)}}):
        del document[APPLIED_AT]
        held[document["_id"]] = document
    return held


def _mismatches(held: dict[str, dict[str, Any]], newest: dict[str, Command]) -> list[str]:
    return [
        f"{customer_id}: holds {held.get(customer_id)}, newest is {command!r}"
        for customer_id, command in newest.items()
        if held.get(customer_id) != _expected_document(command)
    ]


async def _watch_versions(
    collection: Collection, ids: list[str], done: asyncio.Event, regressions: list[str]
) -> int:
    """Read every customer over and over until ``done``; note any version that went back."""
    seen: dict[str, int] = {}
    rounds = 0
    while not done.is_set():
        async for document in collection.find({"_id": {"$in": ids}}, {VERSION: 1}):
            before = seen.get(document["_id"], 0)
            if document[VERSION] < before:
                regressions.append(f"{document['_id']}: v{before} then v{document[VERSION]}")
            seen[document["_id"]] = max(before, document[VERSION])
        rounds += 1
    return rounds


async def _race(guarded: Guarded, racers: Sequence[Racer]) -> None:
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(
            racer.run(guarded.open_applier(racer.role, racer.parker, racer.dead_letters), start)
        )
        for racer in racers
    ]
    start.set()
    await asyncio.gather(*tasks)


async def _replay(guarded: Guarded, envelopes: list[Envelope], refused: KeptDeadLetters) -> None:
    """Replay what was parked or left uncommitted, as recovery does once nothing races it:
    a batch the store fails is tried again after recovery's pause, until it is written."""
    drainer = guarded.open_applier("drainer", None, refused)
    deadline = asyncio.get_running_loop().time() + REPLAY_WITHIN_S
    for start in range(0, len(envelopes), 100):
        while True:
            try:
                await drainer.apply(envelopes[start : start + 100], TargetsIn(REGION))
                break
            except RegionUnavailableError:
                assert asyncio.get_running_loop().time() < deadline, "the store never took it"
                await asyncio.sleep(RETRY_PAUSE_S)


async def test_racing_appliers_leave_every_customer_at_its_newest_version(
    guarded: Guarded,
) -> None:
    rng = random.Random()
    histories = _histories(guarded.regions, rng)
    newest = {customer_id: history[-1] for customer_id, history in histories.items()}
    racers = [
        Racer(role, None if role == "drainer" else KeptParker())
        for role in (ROLES[i % len(ROLES)] for i in range(APPLIERS))
    ]
    _deal(racers, [c for history in histories.values() for c in history], rng)
    done = asyncio.Event()
    regressions: list[str] = []
    watcher = asyncio.create_task(
        _watch_versions(guarded.collection, list(histories), done, regressions)
    )
    try:
        async with asyncio.timeout(RACE_WITHIN_S):
            await _race(guarded, racers)
    finally:
        done.set()
        watch_rounds = await watcher

    refused = KeptDeadLetters([r for racer in racers for r in racer.dead_letters.rejected])
    # Where the newest command certainly reached the store, the race alone must have left it.
    landed = set().union(*(racer.landed for racer in racers))
    after_race = await _held(guarded.collection, histories)
    assert not _mismatches(
        after_race, {cid: c for cid, c in newest.items() if c.command_id in landed}
    )
    assert not regressions, regressions
    assert watch_rounds > 1  # the watcher read during the race, not only after it
    outcomes = [o for racer in racers for r in racer.results for o in r.regions.values()]
    assert sum(o.stale for o in outcomes) > 0  # replays met newer versions and were refused

    await _replay(guarded, [envelope for racer in racers for envelope in racer.leftovers], refused)
    final = await _held(guarded.collection, histories)
    assert not _mismatches(final, newest), refused.lines()
    # Every command is valid: one sent to the dead-letter topic is a write the region lost.
    assert not refused.lines(), refused.lines()
    deleted_last = [cid for cid, command in newest.items() if isinstance(command, DeleteCustomer)]
    assert len(deleted_last) == CUSTOMERS // 4
    assert all(final[cid][DELETED] is True for cid in deleted_last)


async def test_an_older_upsert_replayed_after_a_tombstone_changes_nothing(
    guarded: Guarded,
) -> None:
    customer_id = new_id()
    tombstone = _delete(guarded.regions, customer_id, version=10)
    replay = _upsert(guarded.regions, customer_id, 5, home=REGION, city="resurrected")
    refused = KeptDeadLetters()
    applier = guarded.open_applier("drainer", None, refused)

    first = await applier.apply([_envelope(tombstone)], TargetsIn(REGION))
    second = await applier.apply([_envelope(replay)], TargetsIn(REGION))

    assert (first.regions[REGION].written, first.regions[REGION].stale) == (1, 0)
    assert (second.regions[REGION].written, second.regions[REGION].stale) == (0, 1)
    document = await guarded.collection.find_one({"_id": customer_id})
    assert document is not None
    assert (document[VERSION], document[DELETED]) == (10, True)
    assert document[COMMAND_ID] == str(tombstone.command_id)
    assert "customer_city" not in document
    assert not refused.lines(), refused.lines()
