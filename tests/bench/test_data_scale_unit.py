"""The data-scale fixture's queries: each drawn from a customer it matches."""

from __future__ import annotations

import random
from typing import Any

import pytest

from regionstore_bench.data_scale import SHAPES, _label, _query
from regionstore_shared.schemas import fold_text

BODY = {
    "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 13560,
    "customer_city": "São Carlos",
    "customer_state": "SP",
}


def matches(query: dict[str, Any], body: dict[str, Any]) -> bool:
    zip_prefix = body["customer_zip_code_prefix"]
    low = query.get("zip_min", query.get("zipRangeMin", 0))
    high = query.get("zip_max", query.get("zipRangeMax", 99999))
    return (
        low <= zip_prefix <= high
        and query.get("state", body["customer_state"]) == body["customer_state"]
        and fold_text(body["customer_city"]).startswith(query.get("city", ""))
        and query.get("region", "region_1") == "region_1"
    )


@pytest.mark.parametrize("shape", [s for s in SHAPES if s not in {"state_SP", "city_sao"}])
def test_every_drawn_query_matches_the_customer_it_was_drawn_from(shape: str) -> None:
    rng = random.Random(3)
    for _ in range(20):
        assert matches(_query(shape, BODY, rng, "region_1"), BODY)


@pytest.mark.parametrize(
    ("customers", "label"), [(99_600, "100k"), (1_000_400, "1M"), (2_500_000, "2.5M")]
)
def test_a_results_file_is_named_by_the_size_measured(customers: float, label: str) -> None:
    assert _label(customers) == label
