"""Store writes per customer write: today every region; with the table, placement and left."""

from __future__ import annotations

import pytest

from regionstore_bench.report import _write_cost_lines
from regionstore_bench.write_cost import SIZES, ring, write_cost, write_costs


@pytest.mark.parametrize("size", SIZES)
def test_today_every_write_reaches_every_region(size: int) -> None:
    cost = write_cost(size, customers=50)
    assert cost["today"] == {"create": size, "move": size, "delete": size}


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("size", SIZES)
def test_table_costs_the_placement_and_the_regions_left(size: int, replicas: int) -> None:
    cost = write_cost(size, replicas=replicas, customers=200)["table"]
    placement = 1 + replicas
    assert cost["create"] == placement
    # A move leaves at most the whole old placement, and at least the old home when the map
    # has regions outside a placement.
    assert cost["move"] <= min(size, 2 * placement)
    assert cost["move"] >= (placement + 1 if size > placement else placement)
    assert cost["delete"] == placement


def test_ring_replicates_to_the_next_regions() -> None:
    regions = ring(6, replicas=2)
    assert regions.replicas_of("r5") == ("r0", "r1")
    assert regions.zip_min == 1000
    assert regions.zip_max == 99999


def test_report_has_a_row_per_map() -> None:
    lines = _write_cost_lines(write_costs())
    rows = [line for line in lines if line.startswith("| 12 |")]
    assert len(rows) == 2
    assert "12.0 / 2.0" in rows[0]
