"""Buckets of customer ids and their digests: how regions are compared without comparing every
document.

A *bucket* is every customer id that starts with the same ``prefix`` characters (ids are
compared as bytes, in the order the stores keep ``_id``, so a stream of one region's copies in
``_id`` order passes each bucket once, whole). Each region's share of a bucket is summed up per
*placement group*, the home region its live copies name: a hash over the ``(id, version)`` of
every live copy of that group, in id order. Two regions that must hold the same customers (a
home and its replicas) then agree on a bucket exactly when their digests of that group are
equal, and a region outside the placement must hold none of that group live.

Tombstones are summed up too, per region, as the bucket's newest-delete digest: a live copy that
every region of its placement holds alike can still be older than a delete some region holds,
or than a move; the bucket is compared copy by copy whenever any region holds a tombstone newer
than a live copy of the same id (see :func:`bucket_differs`). Only the buckets that differ are
read again in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from regionstore_shared.regions import RegionMap


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

    def digest(self, group: str | None) -> tuple[int, bytes] | None:
        """The group's digest; None when the region holds none of it live."""
        found = self.groups.get(group)
        return None if found is None else found.value


def share_of(copies: Iterable[Copy]) -> Share:
    """A region's share of a bucket from its copies (in id order)."""
    share = Share()
    for copy in copies:
        share.add(copy)
    return share


def bucket_differs(shares: Mapping[str, Share], regions: RegionMap) -> bool:
    """Whether a bucket needs comparing copy by copy.

    It does when a placement group's digests differ between the regions of its placement, when
    a region outside the placement holds one of its customers live, when a group names no home
    the map knows, or when a tombstone is newer than a live copy of the same customer anywhere.
    """
    groups = {group for share in shares.values() for group in share.groups}
    for group in groups:
        if group is None or group not in regions:
            return True
        placement = regions.placement_of_home(group)
        seen = {shares[r].digest(group) if r in shares else None for r in placement}
        if len(seen) != 1:
            return True
        if any(
            share.digest(group) is not None
            for region, share in shares.items()
            if region not in placement
        ):
            return True
    return _tombstone_above_live(shares.values())


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
