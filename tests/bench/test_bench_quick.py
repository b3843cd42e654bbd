"""The benchmark runs end to end on the stack and writes a complete results file.

It runs every scenario at its smallest (``--smoke``: the same code as ``make bench-quick`` and
``make bench``, smaller counts), since what it proves is the run and its file, not the figures.
Speeds are not asserted (CI machines differ); completeness and the audit are.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_WITHIN_S = 600

SCENARIO_FIELDS: dict[str, list[str]] = {
    "baselines": [
        "kafka_produce.msgs_per_s",
        "kafka_produce.messages",
        "kafka_produce.message_bytes_mean",
        "kafka_consume.msgs_per_s",
        "produce_rtt.p50_ms",
        "produce_rtt.p99_ms",
        "insert_many.docs_per_s",
        "insert_many.documents",
        "insert_many_full.docs_per_s",
        "insert_many_full.holding",
    ],
    "ingest_single": [
        "requests",
        "concurrency",
        "accepted_per_s",
        "accept_latency.p50_ms",
        "accept_latency.p99_ms",
        "unloaded_accept_latency.p50_ms",
        "failed",
        "cpu_us_per_accepted",
        "bare_cpu_us_per_request",
        "applied_s_after_rounds",
    ],
    "ingest_batch": [
        "customers",
        "accepted",
        "accepted_per_s",
        "applied_per_s",
        "applied_seconds",
        "apply_latency.both_p50_ms",
        "apply_latency.both_p99_ms",
        "apply_latency.home_p50_ms",
        "apply_latency.replica_p99_ms",
        "apply_lag_histogram.home_p50_ms",
        "apply_lag_histogram.replica_p99_ms",
    ],
    "recovery": [
        "writes",
        "parked",
        "backlog_at_flip",
        "store_documents_at_flip",
        "drain_seconds",
        "drain_per_s",
        "steady_drain_per_s",
    ],
    "queries": [
        "queries",
        "all_up.p50_ms",
        "all_up.p99_ms",
        "one_down.p50_ms",
        "one_down.p99_ms",
        "one_down.degraded_answers",
    ],
    "end_to_end": [
        "idle.cpu_ms_per_s.all",
        *(
            f"rounds.{label}.{field}"
            for label in ("20/s", "100/s", "1000/s", "saturation")
            for field in (
                "accepted_per_s",
                "applied_per_s",
                "accept_to_applied_p50_s",
                "accept_to_applied_p99_s",
                "load_1m",
                "cpu_ms_per_write.kafka",
                "cpu_ms_per_write.gateway",
                "cpu_ms_per_write.writer",
                "cpu_ms_per_write.replicator",
                "cpu_ms_per_write.all",
            )
        ),
        "low_rate_to_saturation_cpu_ratio",
        "singles.accepted_per_s",
        "singles.applied_per_s",
        "singles.accept_to_applied_p50_ms",
        "singles.accept_to_applied_p99_ms",
        "restated.batch_applied_per_s",
        "restated.single_accepted_to_bare",
        "restated.drain_under_live_writes_per_s",
        "restated.drain_under_live_writes_to_insert_many",
    ],
}
AUDITED = ("ingest_single", "ingest_batch", "recovery")
END_TO_END_ROUNDS = ("20/s", "100/s", "1000/s", "saturation")
END_TO_END_TARGETS = 3
SERVICES = ("gateway", "writer", "replicator", "recovery")


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        assert isinstance(value, dict), f"{dotted}: {part} is not inside a mapping"
        assert part in value, f"{dotted}: {part} is missing"
        value = value[part]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _stack_env(stack: Any) -> dict[str, str]:
    """The stack's endpoints in the variables the bench (like the services) reads."""
    env = dict(os.environ)
    # The reference app is run by hand; the smoke run proves the row without it.
    env.pop("REGIONSTORE_BENCH_REFERENCE_URL", None)
    endpoints = getattr(stack, "endpoints", None)
    if endpoints is not None:
        env["REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"] = endpoints.kafka_bootstrap
        env["REGIONSTORE_REDIS__URL"] = endpoints.redis_url
        for region, uri in endpoints.stores.items():
            env[f"REGIONSTORE_STORES__{region.upper()}"] = uri
        for service, url in endpoints.services.items():
            env[f"REGIONSTORE_{service.upper()}_URL"] = url
    return env


@pytest.fixture(scope="module")
def quick_results(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the bench once at its smallest, into a scratch results directory."""
    directory = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "regionstore_bench", "--smoke", "--results-dir", str(directory)],
        cwd=REPO_ROOT,
        env=_stack_env(stack),
        capture_output=True,
        text=True,
        timeout=QUICK_WITHIN_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return directory


@pytest.mark.timeout(QUICK_WITHIN_S + 60)
class TestQuickBench:
    def test_every_scenario_field_is_a_number(self, quick_results: Path) -> None:
        data = json.loads((quick_results / "smoke.json").read_text())
        for scenario, fields in SCENARIO_FIELDS.items():
            assert scenario in data, f"scenario {scenario} missing"
            for field in fields:
                value = _get(data[scenario], field)
                assert _is_number(value), f"{scenario}.{field} = {value!r}"

    def test_audits_found_nothing_wrong(self, quick_results: Path) -> None:
        data = json.loads((quick_results / "smoke.json").read_text())
        for scenario in AUDITED:
            audit = data[scenario]["audit"]
            assert audit["checked"] > 0, scenario
            for kind in ("lost", "duplicated", "stale", "resurrected"):
                assert audit[kind] == 0, f"{scenario}: {kind} = {audit[kind]}"
        for label in END_TO_END_ROUNDS:
            audit = data["end_to_end"]["rounds"][label]["audit"]
            assert audit["checked"] > 0, label
            for kind in ("lost", "duplicated", "stale", "resurrected"):
                assert audit[kind] == 0, f"end to end {label}: {kind} = {audit[kind]}"

    def test_memory_targets_and_settings_are_recorded(self, quick_results: Path) -> None:
        data = json.loads((quick_results / "smoke.json").read_text())
        for service in SERVICES:
            assert _is_number(data["rss_mb"]["idle"][service]), service
            assert _is_number(data["rss_mb"]["batch_peak"][service]), service
        targets = data["targets"]
        assert len(targets) == 6 + END_TO_END_TARGETS + 2 * len(SERVICES)
        single = data["ingest_single"]
        assert single["bare_per_s"] > 0
        assert single["ratio_to_bare"] == single["accepted_per_s"] / single["bare_per_s"]
        for target in targets:
            assert _is_number(target["ratio"]), target["name"]
            assert isinstance(target["pass"], bool), target["name"]
        meta = data["meta"]
        assert meta["plan"]["name"] == "smoke"
        assert _is_number(meta["machine"]["cores"])
        assert meta["machine"]["kafka"]
        assert meta["settings"]["kafka"]["partitions"] >= 1

    def test_summary_and_chart_are_written(self, quick_results: Path) -> None:
        summary = (quick_results / "smoke.md").read_text()
        assert "## Targets" in summary
        assert "## End to end, every process running" in summary

    def test_the_reference_row_says_not_run_without_a_figure(self, quick_results: Path) -> None:
        data = json.loads((quick_results / "smoke.json").read_text())
        reference = data["end_to_end"]["reference"]
        assert reference["run"] is False
        assert "requests_per_s" not in reference
        assert math.isnan(data["end_to_end"]["restated"]["reference_requests_per_s"])
        assert "| original app | not run" in (quick_results / "smoke.md").read_text()
        assert (quick_results / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
