"""Cursor paging: opaque cursors bound to the query they page, and the page they continue.

A cursor is base64url JSON ``{"v": 2, "o": order, "k": key, "q": fingerprint}``: the key of the
last row (or of where a budgeted walk stopped) in the filter's order, and a digest of the
filter. The first release's cursors, ``{"after": id, "q": ...}``, still page filters that are
ordered by id; for a filter now ordered otherwise they are refused, saying so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from regionstore_gateway.adapters.list_order import Key, Order
from regionstore_gateway.adapters.repository import CustomerFilter, Found, Page
from regionstore_gateway.services.errors import InvalidInput
from regionstore_shared.schemas import fold_text

_CURSOR = ("query", "cursor")
VERSION = 2

Position = tuple[Order, Key]
"""Where a listing stands: the order its first page took, and the key its last page ended on."""

LIST_ANSWERS = Counter(
    "regionstore_list_answers_total",
    "List answers (a page of /v1/customers, a /filter-records answer) by result: complete,"
    " degraded (a region's share read from its replica) or incomplete (a share nobody could"
    " serve: the answer is marked incomplete).",
    ["result"],
)
_RESULTS = {
    name: LIST_ANSWERS.labels(result=name) for name in ("complete", "degraded", "incomplete")
}


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of customers, the cursor to the next one, and the regions it could not see."""

    rows: list[Found]
    next_cursor: str | None
    order: Order
    degraded: list[str]
    unreachable: list[str]

    def counted(self) -> Listing:
        """This listing, counted in ``regionstore_list_answers_total``."""
        result = "incomplete" if self.unreachable else "degraded" if self.degraded else "complete"
        _RESULTS[result].inc()
        return self


def fingerprint(query: CustomerFilter) -> str:
    """The filter as its pages see it: a city is compared folded, so its spellings agree."""
    canonical = {
        "zip_min": query.zip_min,
        "zip_max": query.zip_max,
        "city": fold_text(query.city) if query.city else None,
        "state": query.state,
        "region": query.region,
        "unique_id": query.unique_id,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def _first_release_fingerprint(query: CustomerFilter) -> str:
    """How the first release bound a cursor to its filter (the filter's repr then)."""
    text = (
        f"CustomerFilter(zip_min={query.zip_min!r}, zip_max={query.zip_max!r}, "
        f"city={query.city!r}, state={query.state!r}, region={query.region!r})"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(after: Key, order: Order, query: CustomerFilter) -> str:
    """An opaque cursor bound to the query it pages."""
    data = {"v": VERSION, "o": order.value, "k": list(after), "q": fingerprint(query)}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _refused(reason: str) -> InvalidInput:
    return InvalidInput.field(_CURSOR, reason)


def decode_cursor(cursor: str, orders: Sequence[Order], query: CustomerFilter) -> Position:
    """The order and key to continue after, where ``orders`` are those the filter may be read
    in; 422 for a malformed cursor, one from another query, or one from a release that ordered
    this filter otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data: Any = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error) as error:
        raise _refused("is not a cursor this API issued") from error
    if not isinstance(data, dict) or not ({"v", "k", "q"} <= data.keys() or "after" in data):
        raise _refused("is not a cursor this API issued")
    if "v" not in data:
        return Order.ID, _first_release(data, orders[0], query)
    if data.get("v") != VERSION:
        raise _refused(
            f"was issued by another release of the API (cursor version {data.get('v')!r}, "
            f"this one reads {VERSION}): start again from the first page"
        )
    if data.get("q") != fingerprint(query):
        raise _refused("belongs to a different query")
    key = data.get("k")
    order = next((o for o in orders if o.value == data.get("o")), None)
    if order is None or not isinstance(key, list) or not order.valid(key):
        raise _refused("is not a cursor this API issued")
    return order, tuple(key)


def _first_release(data: dict[str, Any], order: Order, query: CustomerFilter) -> Key:
    after = data["after"]
    if not isinstance(after, str) or "q" not in data:
        raise _refused("is not a cursor this API issued")
    if data["q"] != _first_release_fingerprint(query) or query.unique_id is not None:
        raise _refused("belongs to a different query")
    if order is not Order.ID:
        raise _refused(
            "was issued by an earlier release, which ordered this filter by customer_id; it is "
            f"now ordered by {', '.join(order.api_fields)}: start again from the first page"
        )
    return (after,)


def listing(page: Page, query: CustomerFilter) -> Listing:
    """A repository page as the client sees it: a cursor only when more rows may follow."""
    return Listing(
        rows=page.rows,
        next_cursor=None
        if page.next_after is None
        else encode_cursor(page.next_after, page.order, query),
        order=page.order,
        degraded=list(page.degraded),
        unreachable=list(page.unreachable),
    )
