"""How a list query walks the stores: its order, its index, and the merge of the regions' walks.

Each filter is read in the order of one index (shared/indexes.py), so a page is a walk of that
index from the cursor that stops after the page, whatever the number of matches (docs/reads.md):

- no field filter, a state, or a unique id: by customer id;
- a city prefix (and maybe a state): by the folded city, then id;
- a zip range (and maybe a state): by zip prefix, then id.

A zip range with a city is the one shape no index bounds on both. It walks one of the two
indexes, the zip one (by zip) or the city one (by city): its first page walks both and keeps
the better, and the cursor keeps that order for the next pages. The other condition is tested
on at most ``budget`` walked entries a page, so a page may hold fewer rows than asked for, even
none, and still have a next one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from regionstore_shared import indexes
from regionstore_shared.documents import CITY_KEY, DELETED, HOME
from regionstore_shared.schemas import fold_text

Document = dict[str, Any]
Key = tuple[Any, ...]
"""Where a row stands in its order: ``(id,)``, or ``(zip, id)`` or ``(city key, id)``."""
Sort = list[tuple[str, int]]
T = TypeVar("T")

ZIP = "customer_zip_code_prefix"
STATE = "customer_state"
UNIQUE = "customer_unique_id"
# Folded city keys hold no control characters (cities are printable text), so the first key
# after ``v`` is ``v + AFTER_TEXT``: a bound the index seeks to, where ``$gt: v`` makes a
# DocumentDB walk step over every entry equal to ``v`` (all of a large city) before the next.
AFTER_TEXT = "\x01"
MAX_CODE_POINT = 0x10FFFF


class Order(StrEnum):
    """The order of a list's rows, fixed by which fields its filter has."""

    ID = "id"
    ZIP = "zip"
    CITY = "city"

    @property
    def store_field(self) -> str | None:
        """The document field sorted on before ``_id``."""
        return {Order.ID: None, Order.ZIP: ZIP, Order.CITY: CITY_KEY}[self]

    @property
    def api_fields(self) -> list[str]:
        """The order as the API states it (the city is compared without case or accents)."""
        return {
            Order.ID: ["customer_id"],
            Order.ZIP: [ZIP, "customer_id"],
            Order.CITY: ["customer_city", "customer_id"],
        }[self]

    def key(self, document: Document) -> Key:
        """The row's place in this order."""
        name = self.store_field
        return (document["_id"],) if name is None else (document[name], document["_id"])

    def valid(self, key: Sequence[object]) -> bool:
        """Whether ``key`` has this order's shape (a cursor may have been tampered with)."""
        if self is Order.ID:
            return len(key) == 1 and isinstance(key[0], str)
        value_type: type = str if self is Order.CITY else int
        return (
            len(key) == 2
            and isinstance(key[0], value_type)
            and not isinstance(key[0], bool)
            and isinstance(key[1], str)
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """One filter's walk: its order and index, the fields it bounds and what it tests after."""

    order: Order
    index: str
    equal: Document = field(default_factory=dict)
    """Conditions every segment carries: the index's equality prefix (and, for a walk of one
    unique id's few entries, every other condition of the filter)."""
    zip_min: int | None = None
    zip_max: int | None = None
    city_prefix: str | None = None
    """Folded; bounds the walk in city order, is tested on the walk in zip order."""

    @property
    def residual(self) -> Document | None:
        """The condition tested on walked entries rather than bounding the walk."""
        if self.order is Order.ZIP and self.city_prefix:
            return {CITY_KEY: _prefix(self.city_prefix)}
        if self.order is Order.CITY and (self.zip_min is not None or self.zip_max is not None):
            return {ZIP: self._zips(None)}
        return None

    def admits(self, value: Any) -> bool:
        """Whether the order field's ``value`` (a cursor's, of the type ``Order.valid`` checks)
        can match the filter."""
        if self.order is Order.ZIP:
            return (self.zip_min is None or value >= self.zip_min) and (
                self.zip_max is None or value <= self.zip_max
            )
        return self.order is Order.CITY and str(value).startswith(str(self.city_prefix))

    def segments(self, home: str, after: Key | None) -> list[Document]:
        """The store filters walked in turn for one home, each in index order, from ``after``.

        In id order one range does. In a field's order, a page that starts inside a value
        (``after`` is ``(v, id)``) first walks the rest of ``v`` by id, then the values above it:
        two bounded walks, since one range cannot say "after (v, id)" to an index.
        """
        base: Document = {HOME: home, DELETED: False, **self.equal}
        name = self.order.store_field
        if name is None:
            return [base if after is None else {**base, "_id": {"$gt": after[0]}}]
        if after is None:
            return [{**base, name: self._range(None)}]
        value, customer_id = after
        walks = []
        if self.admits(value):
            walks.append({**base, name: value, "_id": {"$gt": customer_id}})
        if self.order is Order.CITY or self.zip_max is None or value < self.zip_max:
            walks.append({**base, name: self._range(value)})
        return walks

    def sort(self) -> Sort:
        """The index order of every segment."""
        name = self.order.store_field
        return [("_id", 1)] if name is None else [(name, 1), ("_id", 1)]

    def pipeline(self, segment: Document, budget: int, limit: int) -> list[Document]:
        """A segment's walk that tests the residual on at most ``budget`` entries."""
        return [
            {"$match": segment},
            {"$sort": dict(self.sort())},
            {"$limit": budget},
            {"$match": self.residual or {}},
            {"$limit": limit},
        ]

    def _range(self, above: Any) -> Document:
        """The order field's condition, over values above ``above`` when given."""
        if self.order is Order.CITY:
            condition = _prefix(str(self.city_prefix))
            if above is not None:
                condition["$gte"] = max(condition["$gte"], f"{above}{AFTER_TEXT}")
            return condition
        return self._zips(above)

    def _zips(self, above: int | None) -> Document:
        """The zip range, over zips above ``above`` when given."""
        return _zip_range(
            self.zip_min if above is None else max(above + 1, self.zip_min or 0), self.zip_max
        )


def _zip_range(low: int | None, high: int | None) -> Document:
    condition = {} if low is None else {"$gte": low}
    if high is not None:
        condition["$lte"] = high
    return condition


def _prefix(folded: str) -> Document:
    """The keys that start with ``folded``: the range from it to the first text after all of
    them. An index walks a range exactly; user text is never a pattern, and no regex runs."""
    condition: Document = {"$gte": folded}
    above = _after_prefix(folded)
    if above is not None:
        condition["$lt"] = above
    return condition


def _after_prefix(text: str) -> str | None:
    """The least text greater than every text that starts with ``text``: its last character
    one code point up (code point order is UTF-8's byte order, which the stores compare in)."""
    while text:
        last = ord(text[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are no text: skip to the next character
            last = 0xE000
        if last <= MAX_CODE_POINT:
            return text[:-1] + chr(last)
        text = text[:-1]
    return None


def plans(
    *,
    zip_min: int | None,
    zip_max: int | None,
    city: str | None,
    state: str | None,
    unique_id: str | None = None,
) -> list[Plan]:
    """The walks that can read a validated filter, the default first: one for every shape but
    a zip range with a city, which may walk either index (the region only picks the homes)."""
    equal: Document = {STATE: state} if state else {}
    prefix = fold_text(city) if city else None
    if unique_id:
        # A person's few customer ids: the other conditions are tested on them as they are.
        if zip_min is not None or zip_max is not None:
            equal[ZIP] = _zip_range(zip_min, zip_max)
        if prefix:
            equal[CITY_KEY] = _prefix(prefix)
        return [Plan(Order.ID, indexes.UNIQUE_ID, {UNIQUE: unique_id, **equal})]
    by_city = Plan(
        Order.CITY,
        indexes.STATE_CITY_ID if state else indexes.CITY_ID,
        equal,
        zip_min,
        zip_max,
        prefix,
    )
    if zip_min is not None or zip_max is not None:
        index = indexes.STATE_ZIP_ID if state else indexes.ZIP_ID
        by_zip = Plan(Order.ZIP, index, equal, zip_min, zip_max, prefix or None)
        return [by_zip, by_city] if prefix else [by_zip]
    if prefix:
        return [by_city]
    return [Plan(Order.ID, indexes.STATE_ID if state else indexes.HOME_ID, equal)]


@dataclass(frozen=True, slots=True)
class Walk(Generic[T]):
    """What one home's walk returned, and how far it saw.

    ``reach`` is the last key it has read through: every matching row up to it is in ``rows``.
    None when it read to the end of its range.
    """

    rows: list[T]
    reach: Key | None
    examined: int
    """Index entries it read, at least: what /filter-records counts against its bound."""


@dataclass(frozen=True, slots=True)
class Merged(Generic[T]):
    """A page of rows from several walks, in order, and the key the next page starts after."""

    rows: list[T]
    next_after: Key | None


def merge(walks: Sequence[Walk[T]], key: Callable[[T], Key], limit: int) -> Merged[T]:
    """The first ``limit`` rows of the walks in order, up to where every walk has reached.

    A row past a walk's reach cannot be shown yet: that walk may hold rows before it that it
    has not read. So the page ends at the lowest reach, and may be short when a walk stopped
    on its budget; the next page then starts after that reach.
    """
    frontier = min((w.reach for w in walks if w.reach is not None), default=None)
    keyed = heapq.merge(*([(key(row), row) for row in w.rows] for w in walks), key=_first)
    page: list[tuple[Key, T]] = []
    for row_key, row in keyed:
        if frontier is not None and row_key > frontier:
            break
        if len(page) == limit:
            return Merged([row for _, row in page], page[-1][0])
        page.append((row_key, row))
    return Merged([row for _, row in page], frontier)


def _first(pair: tuple[Key, object]) -> Key:
    return pair[0]
