"""The end-to-end cost rounds' arithmetic and their table."""

from __future__ import annotations

import math

from regionstore_bench.cost import PROCESSES, per_write, percentile, table, writes_for


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
        "writes_per": {
            "writer_batches": 2.0,
            "writer_commits": 20.0,
            "replicator_batches": 4.0,
            "replicator_commits": 10.0,
        },
        "load_1m": 1.25,
    }
    idle = {"cpu_ms_per_s": dict.fromkeys((*PROCESSES, "all"), 2.0), "load_1m": 0.5}
    text = table(
        {
            "idle": idle,
            "rounds": {"20/s": row, "saturation": row},
            "low_rate_to_saturation_cpu_ratio": 2.5,
        }
    )
    assert "| idle (CPU ms a second) | 0.50 | | | | | 2.0 / 2.0 / 2.0 / 2.0 / 2.0 |" in text
    assert (
        "| 20/s | 1.25 | 20 | 19 | 100 / 500 ms | 2.0 / 20.0, 4.0 / 10.0 | "
        "1.00 / 1.00 / 1.00 / 1.00 / 1.00 |"
    ) in text
    assert "| saturation |" in text
    assert "2.5 times" in text


def test_writes_per_batch_come_from_two_readings_and_none_spent_is_nan() -> None:
    per = per_write({"batches": 14.0, "commits": 3.0}, {"batches": 4.0, "commits": 3.0}, 20)
    assert per["batches"] == 2.0
    assert math.isnan(per["commits"])
