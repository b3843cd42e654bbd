"""Buckets of customer ids and their digests: how regions are compared without comparing every
document.

A *bucket* is every customer id that starts with the same ``prefix`` characters (ids are
compared as bytes, in the order the stores keep ``_id``). Each region's live copies in a bucket
are summed up per *placement group*, the home region they name. Two regions that must hold the
same customers (a home and its replicas) agree on a bucket exactly when their summaries of that
group are equal, and a region outside the placement must hold none of that group live.

Two levels:

1. **On the store**, one aggregation per slice of ids (:func:`summary_pipeline`) sums up every
   bucket and group: the count, two sums of the versions modulo two primes, and the highest
   version. Nothing leaves the store but a few numbers per bucket.
2. **For a bucket whose summaries differ**, the copies themselves (id, version, flags) are read
   from every region and compared customer by customer (:mod:`regionstore_recovery.divergence`),
   after an exact check of the same rule (:func:`bucket_differs`, with a hash of every live
   ``(id, version)`` in id order, and any tombstone newer than a live copy of the same id).

A sum can in principle hide two differences that cancel out (two customers each older in a
different region by exactly the same amount modulo both primes); the second level is exact,
and the next pass compares again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from regionstore_shared.documents import DELETED, HOME, VERSION
from regionstore_shared.regions import RegionMap

P1 = 1_000_000_007
P2 = 998_244_353
Summary = tuple[int, int, int, int]
"""A group's live copies in a bucket, as a store sums them up: count, sum of versions modulo
P1, modulo P2, and the highest version."""


@dataclass(frozen=True, slots=True)
class Copy:
    """What one region holds of one customer: enough to compare, never the customer's fields."""

    customer_id: str
    version: int
    deleted: bool
    home: str | None
    applied_at_ms: int | None = None
    """When the copy was written (ms since the epoch); None when the store does not say."""
    command_id: str | None = None
    """The command that wrote it."""


def bucket_of(customer_id: str, prefix: int) -> str:
    """The bucket of a customer id: its first ``prefix`` characters."""
    return customer_id[:prefix]


@dataclass(slots=True)
class Digest:
    """One placement group's live copies in one region's share of a bucket."""

    count: int = 0
    _hash: hashlib.blake2b = field(default_factory=lambda: hashlib.blake2b(digest_size=16))

    def add(self, copy: Copy) -> None:
        self.count += 1
        self._hash.update(f"{copy.customer_id}\x00{copy.version}\n".encode())

    @property
    def value(self) -> tuple[int, bytes]:
        """What two regions compare: the count and the hash."""
        return self.count, self._hash.digest()


@dataclass(slots=True)
class Share:
    """One region's copies of one bucket, in id order, and their digests per placement group."""

    copies: list[Copy] = field(default_factory=list)
    groups: dict[str | None, Digest] = field(default_factory=dict)
    newest_tombstone: dict[str, int] = field(default_factory=dict)

    def add(self, copy: Copy) -> None:
        self.copies.append(copy)
        if copy.deleted:
            self.newest_tombstone[copy.customer_id] = copy.version
        else:
            self.groups.setdefault(copy.home, Digest()).add(copy)


def share_of(copies: Iterable[Copy]) -> Share:
    """A region's share of a bucket from its copies (in id order)."""
    share = Share()
    for copy in copies:
        share.add(copy)
    return share


def summary_pipeline(prefix: int, match: Mapping[str, object]) -> list[dict[str, object]]:
    """The aggregation that sums up a store's live copies matching ``match``, per bucket and
    placement group (rows ``{_id: {b: bucket, h: home}, n, s1, s2, m}``)."""
    version = f"${VERSION}"
    return [
        {"$match": {**match, DELETED: False}},
        {
            "$group": {
                "_id": {"b": {"$substrBytes": ["$_id", 0, prefix]}, "h": f"${HOME}"},
                "n": {"$sum": 1},
                "s1": {"$sum": {"$mod": [version, P1]}},
                "s2": {"$sum": {"$mod": [version, P2]}},
                "m": {"$max": version},
            }
        },
    ]


def summary_rows(rows: Iterable[Mapping[str, object]]) -> dict[str, dict[str | None, Summary]]:
    """The aggregation's rows, by bucket and placement group."""
    summaries: dict[str, dict[str | None, Summary]] = {}
    for row in rows:
        key = row["_id"]
        assert isinstance(key, Mapping)
        home = key.get("h")
        summaries.setdefault(str(key["b"]), {})[None if home is None else str(home)] = (
            _int(row["n"]),
            _int(row["s1"]),
            _int(row["s2"]),
            _int(row["m"]),
        )
    return summaries


def summarize(copies: Iterable[Copy], prefix: int) -> dict[str, dict[str | None, Summary]]:
    """What :func:`summary_pipeline` computes, over copies in memory."""
    totals: dict[str, dict[str | None, Summary]] = {}
    for copy in copies:
        if copy.deleted:
            continue
        groups = totals.setdefault(bucket_of(copy.customer_id, prefix), {})
        n, s1, s2, m = groups.get(copy.home, (0, 0, 0, 0))
        groups[copy.home] = (
            n + 1,
            s1 + copy.version % P1,
            s2 + copy.version % P2,
            max(m, copy.version),
        )
    return totals


def groups_differ(groups: Mapping[str, Mapping[str | None, object]], regions: RegionMap) -> bool:
    """Whether regions disagree on a bucket, from each region's value per placement group
    (regions holding nothing of the bucket may be left out)."""
    found = differing_groups(groups, regions)
    return found is None or bool(found)


def differing_groups(
    groups: Mapping[str, Mapping[str | None, object]], regions: RegionMap
) -> frozenset[str] | None:
    """The placement groups regions disagree on in a bucket, from each region's value per
    group; None when a group names no home the map knows (then no group can be trusted).

    A group differs when its values differ between the regions of its placement, or when a
    region outside the placement holds one of its customers live.
    """
    names = {group for held in groups.values() for group in held}
    found: set[str] = set()
    for group in names:
        if group is None or group not in regions:
            return None
        placement = regions.placement_of_home(group)
        if len({_value(groups, r, group) for r in placement}) != 1 or any(
            group in held for region, held in groups.items() if region not in placement
        ):
            found.add(group)
    return frozenset(found)


def _value(groups: Mapping[str, Mapping[str | None, object]], region: str, group: str) -> object:
    return groups.get(region, {}).get(group)


def _int(value: object) -> int:
    assert isinstance(value, int | float)
    return int(value)


def bucket_differs(shares: Mapping[str, Share], regions: RegionMap) -> bool:
    """Whether a bucket's copies, read from every region, need comparing customer by customer:
    :func:`groups_differ` over exact digests, or a tombstone newer than a live copy of the same
    customer anywhere."""
    digests = {
        region: {group: digest.value for group, digest in share.groups.items()}
        for region, share in shares.items()
    }
    return groups_differ(digests, regions) or _tombstone_above_live(shares.values())


def _tombstone_above_live(shares: Iterable[Share]) -> bool:
    collected = list(shares)
    newest_delete: dict[str, int] = {}
    for share in collected:
        for customer_id, version in share.newest_tombstone.items():
            newest_delete[customer_id] = max(version, newest_delete.get(customer_id, 0))
    if not newest_delete:
        return False
    return any(
        not copy.deleted and copy.version < newest_delete.get(copy.customer_id, 0)
        for share in collected
        for copy in share.copies
    )


def merged(shares: Mapping[str, Sequence[Copy]]) -> dict[str, dict[str, Copy]]:
    """Every customer of a bucket with its copy in each region that holds one."""
    customers: dict[str, dict[str, Copy]] = {}
    for region, copies in shares.items():
        for copy in copies:
            customers.setdefault(copy.customer_id, {})[region] = copy
    return customers
