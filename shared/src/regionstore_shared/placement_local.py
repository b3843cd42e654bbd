"""A group's placement tables on this machine's disk, beside their compacted topic.

Held in memory, a table costs about 220 bytes a customer, and a consumer given a partition had to
read its whole table from Kafka before routing anything: at millions of customers, gigabytes per
process and a rebalance that stalls for minutes. Kept here instead, in SQLite, a table costs a
bounded page cache, and each partition remembers the offset of its table partition up to which it
holds what was committed (its *mark*). A consumer given a partition reads only what was committed
after the mark, and a standby follower (:mod:`regionstore_shared.placement_log`) keeps the
partitions it does not own near their end, so a partition that changes hands resumes in
the time of the few entries committed since, as Kafka Streams resumes from RocksDB beside its
changelog.

Kafka stays the truth. Entries are taken in offset order and only at or past the mark, so the
follower, a load and this consumer's own commits can all write a partition and it still ends as
the topic's newest entry per customer. Whatever this file holds past the mark (a crash between
writing entries and moving the mark) is read again from the topic before anything is routed.
A file that cannot be trusted (its topic was recreated, its mark is past the topic's end) is
emptied and read again: it can cost time, never correctness.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from pydantic import ValidationError

from regionstore_shared.placement import PLACED_ADAPTER, UNKNOWN_ADAPTER, Placed

UNKNOWN_KEY = b"#unknown"
"""The key of a table's ``unknown`` entry; no customer id can take it (ids have no ``#``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
    partition INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (partition, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mark (
    partition INTEGER PRIMARY KEY,
    offset INTEGER NOT NULL,
    unknown BLOB
);
"""


class StateInUse(RuntimeError):
    """Another process holds this state directory's tables."""


@dataclass(frozen=True, slots=True)
class Mark:
    """How far a partition's local table follows its table partition."""

    offset: int
    """The table partition's offset up to which every committed entry is held."""
    unknown: tuple[str, ...] | None
    """The table's ``unknown`` entry; None while the table was never committed."""


Record = tuple[int, bytes | None, bytes | None]
"""One record of a table partition: its offset, key and value."""


class LocalTables:
    """The tables of one consumer group, in one SQLite file that one process holds."""

    def __init__(self, directory: Path | None, *, group: str, cache_mib: int = 32) -> None:
        self._scratch = None if directory is not None else tempfile.TemporaryDirectory()
        root = Path(self._scratch.name) if self._scratch is not None else directory
        assert root is not None
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{group}.placement.sqlite"
        self._lock = _hold(root / f"{group}.placement.lock")
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A crash of the machine may lose the last transactions; they are read again from Kafka.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()
        self._lock.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def mark(self, partition: int) -> Mark:
        row = self._db.execute(
            "SELECT offset, unknown FROM mark WHERE partition = ?", (partition,)
        ).fetchone()
        if row is None:
            return Mark(0, None)
        offset, unknown = row
        return Mark(offset, None if unknown is None else UNKNOWN_ADAPTER.validate_json(unknown))

    def take(self, partition: int, records: Iterable[Record]) -> None:
        """Take records of a table partition, in offset order; those below the mark are held."""
        start = self.mark(partition)
        offset, unknown = start.offset, start.unknown
        entries: dict[str, bytes] = {}
        for at, key, value in records:
            if at < start.offset:
                continue
            offset = at + 1
            if key is None or value is None:
                continue
            if key == UNKNOWN_KEY:
                unknown = _checked(key, value, UNKNOWN_ADAPTER.validate_json)
            else:
                # Read when routed (LocalTable.get): checking each here would double a load.
                entries[_checked(key, key, bytes.decode)] = value
        if offset == start.offset:
            return
        with _transaction(self._db):
            _put(self._db, partition, entries.items())
            self._set_mark(partition, Mark(offset, unknown))

    def advance(self, partition: int, upto: int, *, unknown: tuple[str, ...]) -> None:
        """This process committed to the table partition, which now ends at ``upto``; the
        entries were kept by :meth:`LocalTable.update` just before."""
        with _transaction(self._db):
            self._set_mark(partition, Mark(max(upto, self.mark(partition).offset), unknown))

    def reset(self, partition: int) -> None:
        """Forget a partition: it is read again from the topic's first offset."""
        with _transaction(self._db):
            self._db.execute("DELETE FROM entry WHERE partition = ?", (partition,))
            self._db.execute("DELETE FROM mark WHERE partition = ?", (partition,))

    def table(self, partition: int) -> LocalTable:
        return LocalTable(self._db, partition)

    def _set_mark(self, partition: int, mark: Mark) -> None:
        unknown = None if mark.unknown is None else UNKNOWN_ADAPTER.dump_json(mark.unknown)
        self._db.execute(
            "INSERT INTO mark (partition, offset, unknown) VALUES (?, ?, ?) "
            "ON CONFLICT (partition) DO UPDATE SET offset = excluded.offset, "
            "unknown = excluded.unknown",
            (partition, mark.offset, unknown),
        )


PREFETCH_CHUNK = 500
"""Customers asked for in one query (SQLite allows up to 32,766 parameters)."""


class LocalTable:
    """One partition's committed placements, read from the file: a batch's customers at once
    (:meth:`prefetch`), or one at a time."""

    def __init__(self, db: sqlite3.Connection, partition: int) -> None:
        self._db = db
        self._partition = partition
        self._fetched: dict[str, bytes | None] = {}

    def prefetch(self, customer_ids: Iterable[str]) -> None:
        """Read these customers' entries in a few queries, for the ``get`` calls that follow
        (until the next prefetch or update)."""
        keys = list(dict.fromkeys(customer_ids))
        self._fetched = dict.fromkeys(keys)
        for start in range(0, len(keys), PREFETCH_CHUNK):
            chunk = keys[start : start + PREFETCH_CHUNK]
            marks = ",".join("?" * len(chunk))
            self._fetched.update(
                self._db.execute(
                    f"SELECT key, value FROM entry WHERE partition = ? AND key IN ({marks})",
                    (self._partition, *chunk),
                ).fetchall()
            )

    def get(self, customer_id: str) -> Placed | None:
        if customer_id in self._fetched:
            value = self._fetched[customer_id]
        else:
            row = self._db.execute(
                "SELECT value FROM entry WHERE partition = ? AND key = ?",
                (self._partition, customer_id),
            ).fetchone()
            value = None if row is None else row[0]
        if value is None:
            return None
        return _checked(customer_id.encode(), value, PLACED_ADAPTER.validate_json)

    def __len__(self) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM entry WHERE partition = ?", (self._partition,)
        ).fetchone()
        return int(count)

    def update(self, placements: Mapping[str, Placed]) -> None:
        """Keep placements committed to the topic (the mark moves after, in
        :meth:`LocalTables.advance`)."""
        self._fetched = {}
        with _transaction(self._db):
            _put(
                self._db,
                self._partition,
                (
                    (k, PLACED_ADAPTER.dump_json(p, exclude_defaults=True))
                    for k, p in placements.items()
                ),
            )


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _put(db: sqlite3.Connection, partition: int, entries: Iterable[tuple[str, bytes]]) -> None:
    db.executemany(
        "INSERT INTO entry (partition, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (partition, key) DO UPDATE SET value = excluded.value",
        ((partition, key, value) for key, value in entries),
    )


def _hold(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateInUse(
            f"{path.parent} is in use by another process of the group: "
            "give each process its own REGIONSTORE_STATE_DIR"
        ) from None
    return handle


T = TypeVar("T")


def _checked(key: bytes, value: bytes, parse: Callable[[bytes], T]) -> T:
    try:
        return parse(value)
    except (ValidationError, UnicodeDecodeError) as error:
        # Only this service's own producers write the topic; a bad entry is a bug, and
        # routing without it could leave a stale copy.
        raise RuntimeError(f"unreadable placement entry {key!r}: {error}") from error
