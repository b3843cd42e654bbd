"""The end-to-end step's arithmetic, targets and report rows; the reference app's request."""

from __future__ import annotations

import math
from typing import Any

import pytest

from regionstore_bench.cost import PROCESSES, RATES, low_to_saturation, writes_for
from regionstore_bench.endtoend import (
    SATURATION_PER_S,
    customers_needed,
    reference_needed,
    restate,
    singles_summary,
)
from regionstore_bench.reference import NOT_RUN, PATH, not_run, reference_body
from regionstore_bench.report import end_to_end_lines, end_to_end_targets, reference_row

AUDIT = {"checked": 10.0, "lost": 0.0, "duplicated": 0.0, "stale": 0.0, "resurrected": 0.0}
CUSTOMER = {
    "customer_id": "bench-1-e-000001",
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 14409,
    "customer_city": "franca",
    "customer_state": "SP",
}


def a_round(cpu_all: float, accepted_per_s: float = 100.0) -> dict[str, Any]:
    return {
        "seconds": 2.0,
        "accepted": 200.0,
        "failed": 0.0,
        "accepted_per_s": accepted_per_s,
        "applied_per_s": accepted_per_s * 0.9,
        "accept_to_applied_p50_s": 0.01,
        "accept_to_applied_p99_s": 0.2,
        "cpu_ms_per_write": {
            "kafka": cpu_all / 4,
            "gateway": cpu_all / 4,
            "writer": cpu_all / 4,
            "replicator": cpu_all / 4,
            "all": cpu_all,
        },
        "writes_per": {
            "writer_batches": 1.0,
            "writer_commits": 10.0,
            "replicator_batches": 1.0,
            "replicator_commits": 10.0,
        },
        "load_1m": 1.5,
        "audit": AUDIT,
    }


def e2e(reference: dict[str, Any] | None = None) -> dict[str, Any]:
    rounds = {"20/s": a_round(12.0, 20.0), "100/s": a_round(6.0), "saturation": a_round(3.0, 900.0)}
    return {
        "idle": {"cpu_ms_per_s": dict.fromkeys((*PROCESSES, "all"), 1.0), "load_1m": 1.0},
        "rounds": rounds,
        "low_rate_to_saturation_cpu_ratio": low_to_saturation(rounds),
        "singles": singles_summary(rounds["saturation"]),
        "reference": reference or not_run(),
    }


def results(reference: dict[str, Any] | None = None, *, paced: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {
        "end_to_end": e2e(reference),
        "ingest_batch": {
            "accepted_per_s": 9000.0,
            "applied_per_s": 4000.0,
            "apply_latency": {"both_p50_ms": 300.0, "both_p99_ms": 900.0},
        },
        "baselines": {"insert_many": {"docs_per_s": 10_000.0}},
        "ingest_single": {"bare_per_s": 1800.0},
    }
    if paced:
        found["paced_drain"] = {
            "modes": {"unpaced": {"drain_per_s": 9000.0, "live_rate_per_s": 200.0}}
        }
    return found


def ran_reference() -> dict[str, Any]:
    return {
        "run": True,
        "concurrency": 32.0,
        "seconds": 30.0,
        "requests_per_s": 250.0,
        "latency": {"p50_ms": 120.0, "p99_ms": 400.0},
    }


class TestSizes:
    def test_the_rounds_have_customers_for_every_fixed_rate_and_saturation(self) -> None:
        fixed = sum(writes_for(rate, 10) for rate in RATES)
        assert customers_needed(10, 30) == fixed + 30 * SATURATION_PER_S

    def test_a_tiny_plan_still_sends_something(self) -> None:
        assert customers_needed(0.01, 0.0001) >= len(RATES) + 1
        assert reference_needed(0.0001) == 1


class TestLowToSaturation:
    def test_is_the_lowest_rate_over_saturation(self) -> None:
        rounds = {"20/s": a_round(12.0), "saturation": a_round(3.0)}
        assert low_to_saturation(rounds) == 4.0

    def test_is_nan_when_a_round_is_missing_or_cost_nothing(self) -> None:
        assert math.isnan(low_to_saturation({"saturation": a_round(3.0)}))
        assert math.isnan(low_to_saturation({"20/s": a_round(3.0), "saturation": a_round(0.0)}))


class TestRestate:
    def test_ratios_in_end_to_end_terms(self) -> None:
        restated = restate(results(ran_reference()))
        assert restated["single_accepted_to_bare"] == 900.0 / 1800.0
        assert restated["drain_under_live_writes_to_insert_many"] == 0.9
        assert restated["single_applied_to_reference"] == 810.0 / 250.0
        assert restated["batch_applied_per_s"] == 4000.0

    def test_missing_figures_are_nan_not_zero(self) -> None:
        restated = restate(results(paced=False))
        assert math.isnan(restated["drain_under_live_writes_per_s"])
        assert math.isnan(restated["drain_under_live_writes_to_insert_many"])
        assert math.isnan(restated["reference_requests_per_s"])
        assert math.isnan(restated["single_applied_to_reference"])


class TestTargets:
    def test_three_targets_with_the_cpu_ratio_against_three(self) -> None:
        data = results()
        data["end_to_end"]["restated"] = restate(data)
        cpu, drain, bare = end_to_end_targets(data["end_to_end"])
        assert cpu["ratio"] == 4.0
        assert cpu["limit"] == 3.0
        assert not cpu["pass"]
        assert drain["ratio"] == 0.9
        assert drain["pass"]
        assert not bare["pass"]

    def test_the_cpu_target_passes_at_three_times_or_less(self) -> None:
        data = results()
        data["end_to_end"]["rounds"]["20/s"] = a_round(9.0, 20.0)
        data["end_to_end"]["restated"] = restate(data)
        assert end_to_end_targets(data["end_to_end"])[0]["pass"]

    def test_a_drain_never_measured_cannot_pass(self) -> None:
        data = results(paced=False)
        data["end_to_end"]["restated"] = restate(data)
        drain = end_to_end_targets(data["end_to_end"])[1]
        assert not drain["pass"]
        assert drain["note"]

    def test_results_from_before_the_step_have_none(self) -> None:
        assert end_to_end_targets(None) == []
        assert end_to_end_lines(None) == []


class TestReferenceRow:
    def test_not_run_has_no_figure(self) -> None:
        row = reference_row(not_run())
        assert row == f"| original app | {NOT_RUN} | | |"
        assert not any(ch.isdigit() for ch in row)

    def test_a_run_gives_its_rate_and_latency(self) -> None:
        row = reference_row(ran_reference())
        assert "| 250 | 250 (in the request) | 120.0 / 400.0 ms (request) |" in row
        assert "32 connections, 30.0 s" in row

    def test_the_summary_carries_the_row_and_the_cost_table(self) -> None:
        data = results(ran_reference())
        data["end_to_end"]["restated"] = restate(data)
        text = "\n".join(end_to_end_lines(data["end_to_end"]))
        assert "| single creates, 32 connections, 2.0 s | 900 | 810 | 10 / 200 ms |" in text
        assert "| `:batch` ingest (scenario 3) | 9,000 | 4,000 | 300 / 900 ms |" in text
        assert "3.24 x the original app's requests/s" in text
        assert "| saturation |" in text


class TestReferenceBody:
    def test_maps_the_customer_to_the_original_fields(self) -> None:
        assert reference_body(CUSTOMER) == {
            "customerId": "bench-1-e-000001",
            "customerUniqueId": "861eff4711a542e4b93843c6dd7febb0",
            "zipCodePrefix": 14409,
            "city": "franca",
            "state": "SP",
        }

    def test_every_region_is_up_in_the_request(self) -> None:
        assert PATH.endswith("?nodes=true,true,true")

    @pytest.mark.parametrize("field", sorted(CUSTOMER))
    def test_a_customer_without_a_field_fails_loudly(self, field: str) -> None:
        body = {k: v for k, v in CUSTOMER.items() if k != field}
        with pytest.raises(KeyError):
            reference_body(body)
