"""The scale-out bench's arithmetic: applies read from metrics pages, rates and the table."""

from __future__ import annotations

import pytest

from regionstore_bench.scaleout import Drain, applied_by_role, markdown, ratio

PAGE = """\
# HELP regionstore_commands_applied_total Command applications written to a regional store.
# TYPE regionstore_commands_applied_total counter
regionstore_commands_applied_total{region="region_1",role="home"} 120.0
regionstore_commands_applied_total{region="region_2",role="home"} 30.0
regionstore_commands_applied_total{region="region_3",role="replica"} 7.0
regionstore_commands_applied_created{region="region_1",role="home"} 1.79e+09
regionstore_commands_stale_total{region="region_1"} 99.0
"""


def test_applies_are_summed_per_role_and_other_series_ignored() -> None:
    assert applied_by_role(PAGE) == {"home": 150.0, "replica": 7.0}


def test_a_page_without_applies_counts_none() -> None:
    assert applied_by_role("") == {"home": 0.0, "replica": 0.0}


def test_a_drain_rate_is_its_applies_over_its_time() -> None:
    assert Drain(started=10.0, finished=14.0, applies=2000.0).per_s == pytest.approx(500.0)


def test_ratio_of_two_to_one_and_of_nothing() -> None:
    assert ratio(1600.0, 1000.0) == 1.6
    assert ratio(5.0, 0.0) == 0.0


def test_the_table_shows_each_comparison() -> None:
    results = {
        "commands_per_phase": 30000.0,
        "writers_alone_1_per_s": 1000.0,
        "writers_alone_2_per_s": 1900.0,
        "writers_alone_ratio": 1.9,
        "writer_1_per_s": 800.0,
        "writer_2_per_s": 1200.0,
        "writer_ratio": 1.5,
        "replicator_1_per_s": 1500.0,
        "replicator_2_per_s": 1500.0,
        "replicator_ratio": 1.0,
    }
    table = markdown(results)
    assert "| writers alone | 1000 | 1900 | 1.90 |" in table
    assert "| replicators, writers running | 1500 | 1500 | 1.00 |" in table
    assert table.startswith("Backlog of 30000 commands per phase")
