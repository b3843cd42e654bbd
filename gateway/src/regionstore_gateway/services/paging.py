"""Cursor paging: opaque cursors bound to the query they page, and the page they continue."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from prometheus_client import Counter

from regionstore_gateway.repository import CustomerFilter, Found, Page
from regionstore_gateway.services.errors import InvalidInput

_CURSOR = ("query", "cursor")

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
    degraded: list[str]
    unreachable: list[str]

    def counted(self) -> Listing:
        """This listing, counted in ``regionstore_list_answers_total``."""
        result = "incomplete" if self.unreachable else "degraded" if self.degraded else "complete"
        _RESULTS[result].inc()
        return self


def _fingerprint(query: CustomerFilter) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


def encode_cursor(after: str, query: CustomerFilter) -> str:
    """An opaque cursor bound to the query it pages."""
    raw = json.dumps({"after": after, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, query: CustomerFilter) -> str:
    """The id to continue after; 422 for a malformed cursor or one from another query."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, fingerprint = data["after"], data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise InvalidInput.field(_CURSOR, "is not a cursor this API issued") from error
    if fingerprint != _fingerprint(query) or not isinstance(after, str):
        raise InvalidInput.field(_CURSOR, "belongs to a different query")
    return after


def listing(page: Page, query: CustomerFilter) -> Listing:
    """A repository page as the client sees it: a cursor only when more rows follow."""
    more = page.more and bool(page.rows)
    return Listing(
        rows=page.rows,
        next_cursor=encode_cursor(str(page.rows[-1].document["_id"]), query) if more else None,
        degraded=list(page.degraded),
        unreachable=list(page.unreachable),
    )
