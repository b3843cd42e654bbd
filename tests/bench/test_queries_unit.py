"""What the query scenario makes of an answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from regionstore_bench.queries import too_broad

TOO_MANY = {"loc": ["body"], "msg": "matches more than 10000 records", "type": "too_many_records"}


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (422, {"detail": [TOO_MANY]}, True),
        (422, {"detail": [{**TOO_MANY, "type": "less_than_equal"}]}, False),
        (422, {"detail": "not a list"}, False),
        (200, {"records": [], "count": 0}, False),
    ],
)
def test_only_the_refusal_of_a_too_broad_filter_is_too_broad(
    status: int, body: dict[str, Any], refused: bool
) -> None:
    assert too_broad(httpx.Response(status, json=body)) is refused
