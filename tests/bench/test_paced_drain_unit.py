"""The paced-drain round's pieces that need no stack: its isolation, its customers, its sums."""

from __future__ import annotations

import json
import math

import pytest

from regionstore_bench.paced_drain import PacedRun, compare, lag_summary, region_customers
from regionstore_bench.probes import Samples
from regionstore_bench.report import paced_drain_lines
from regionstore_shared.settings import CommonSettings

LAG = "regionstore_apply_lag_seconds"


def lag_samples(counts: dict[float, float], total_s: float) -> Samples:
    """A scrape holding the writer's apply-lag histogram with these cumulative buckets."""
    samples: Samples = {}
    for bound, count in counts.items():
        le = "+Inf" if math.isinf(bound) else str(bound)
        samples[f"{LAG}_bucket", (("le", le), ("role", "writer"))] = count
    samples[f"{LAG}_count", (("role", "writer"),)] = counts[math.inf]
    samples[f"{LAG}_sum", (("role", "writer"),)] = total_s
    return samples


class TestPacedRun:
    def test_each_mode_runs_on_names_of_its_own(self) -> None:
        settings = CommonSettings()
        paced, unpaced = PacedRun.of(True, settings), PacedRun.of(False, settings)
        assert paced.prefix != unpaced.prefix
        env = paced.environment("recovery", 9999)
        assert env["REGIONSTORE_KAFKA__COMMAND_TOPIC"] == f"{paced.prefix}.commands"
        assert env["REGIONSTORE_KAFKA__PENDING_TOPIC_PREFIX"] == f"{paced.prefix}.pending."
        assert env["REGIONSTORE_KAFKA__RECOVERY_GROUP_PREFIX"] == f"{paced.prefix}.recovery."
        assert env["REGIONSTORE_REDIS__STATUS_KEY_PREFIX"] == f"{paced.prefix}:node:"
        assert env["REGIONSTORE_HTTP__PORT"] == "9999"
        # Nothing of the stack's own: no default topic, group or key is reused.
        assert all(
            paced.prefix in value
            for name, value in env.items()
            if name.startswith(("REGIONSTORE_KAFKA__", "REGIONSTORE_REDIS__"))
            and name != "REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"
            and name != "REGIONSTORE_REDIS__URL"
        )

    def test_pacing_is_the_one_setting_that_differs(self) -> None:
        settings = CommonSettings()
        paced = PacedRun.of(True, settings).environment("recovery", 1)
        unpaced = PacedRun.of(False, settings).environment("recovery", 1)
        assert (paced["REGIONSTORE_PACING__ENABLED"], unpaced["REGIONSTORE_PACING__ENABLED"]) == (
            "true",
            "false",
        )
        assert paced["REGIONSTORE_DETECTOR__ENABLED"] == "false"

    def test_the_drained_region_lives_in_a_database_of_its_own(self) -> None:
        run = PacedRun.of(True, CommonSettings())
        env = run.environment("writer", 1)
        uri = env[f"REGIONSTORE_STORES__{run.drained.upper()}"]
        assert f"/{run.prefix.replace('.', '_')}_{run.drained}?" in uri
        assert json.loads(env["REGIONSTORE_REGIONS"])[0]["name"] == run.drained

    def test_the_kafka_settings_name_the_mode_topics_and_groups(self) -> None:
        run = PacedRun.of(True, CommonSettings())
        kafka = run.kafka(CommonSettings())
        assert kafka.pending_topic(run.drained) == f"{run.prefix}.pending.{run.drained}"
        assert kafka.recovery_group(run.drained) == f"{run.prefix}.recovery.{run.drained}"


def test_customers_are_new_and_homed_in_the_drained_region() -> None:
    run = PacedRun.of(True, CommonSettings())
    spec = run.regions.spec(run.drained)
    customers = region_customers(run, 50, "live", seed=1)
    assert len(customers) == 50
    assert len({c.customer_id for c in customers}) == 50
    assert all(spec.zip_min <= c.customer_zip_code_prefix <= spec.zip_max for c in customers)
    assert all(c.customer_id.startswith(run.prefix.replace(".", "-")) for c in customers)


def test_the_lag_summary_is_of_what_was_observed_between_the_scrapes() -> None:
    before = lag_samples({0.1: 100, 0.25: 100, 1.0: 100, math.inf: 100}, 5.0)
    # 100 more: 90 under 0.1 s, 9 between 0.25 and 1 s, 1 over 1 s.
    after = lag_samples({0.1: 190, 0.25: 190, 1.0: 199, math.inf: 200}, 5.0 + 20.0)
    summary = lag_summary(before, after)
    assert summary["count"] == 100
    assert summary["mean_s"] == pytest.approx(0.2)
    assert summary["p50_s"] < 0.1
    assert 0.25 < summary["p99_s"] <= 1.0


def test_the_comparison_puts_both_modes_side_by_side() -> None:
    def mode(p99: float, per_s: float) -> dict[str, object]:
        return {"live_during_drain": {"p99_s": p99}, "drain_per_s": per_s}

    figures = compare({"paced": mode(0.3, 500.0), "unpaced": mode(1.2, 1000.0)})
    assert figures["live_p99_during_drain_paced_s"] == 0.3
    assert figures["live_p99_during_drain_unpaced_s"] == 1.2
    assert figures["drain_rate_ratio"] == 0.5


def test_the_summary_has_a_row_per_mode() -> None:
    def mode(p99: float) -> dict[str, object]:
        latency = {"p50_s": 0.1, "p99_s": p99}
        return {
            "backlog": 30000.0,
            "live_rate_per_s": 200.0,
            "drain_per_s": 900.0,
            "live_before": latency,
            "live_during_drain": latency,
            "load_1m": [3.0, 4.0],
        }

    lines = paced_drain_lines({"modes": {"paced": mode(0.25), "unpaced": mode(1.5)}})
    rows = [line for line in lines if line.startswith(("| paced", "| unpaced"))]
    assert len(rows) == 2
    assert "0.10 / 1.50 s" in rows[1]
    assert rows[0].endswith("| 3 to 4 |")
    assert paced_drain_lines(None) == []
