"""The end-to-end cost rounds' arithmetic and their table."""

from __future__ import annotations

import math

from regionstore_bench.cost import PROCESSES, percentile, table, writes_for


def test_a_round_sends_its_rate_for_its_seconds_and_never_nothing() -> None:
    assert writes_for(20, 10) == 200
    assert writes_for(1000, 0.5) == 500
    assert writes_for(0.01, 1) == 1


def test_percentiles_need_two_values() -> None:
    assert math.isnan(percentile([1.0], 50))
    assert percentile([float(v) for v in range(1, 101)], 99) > 98


def test_the_table_has_a_row_per_round_and_the_ratio() -> None:
    cpu = dict.fromkeys((*PROCESSES, "all"), 1.0)
    row = {
        "accepted_per_s": 20.0,
        "applied_per_s": 19.0,
        "accept_to_applied_p50_s": 0.1,
        "accept_to_applied_p99_s": 0.5,
        "cpu_ms_per_write": cpu,
    }
    text = table(
        {"rounds": {"20/s": row, "saturation": row}, "low_rate_to_saturation_cpu_ratio": 2.5}
    )
    assert "| 20/s | 20 | 19 | 100 / 500 ms | 1.00 / 1.00 / 1.00 / 1.00 / 1.00 |" in text
    assert "| saturation |" in text
    assert "2.5 times" in text
