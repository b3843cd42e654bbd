"""The live store-write count's pieces that need no stack: URIs, metrics, the services' env."""

from __future__ import annotations

import json

from regionstore_bench.region_maps import MapRun, store_writes, with_database
from regionstore_bench.report import _write_cost_lines
from regionstore_bench.write_cost import write_costs
from regionstore_shared.settings import CommonSettings

METRICS = """\
# HELP regionstore_commands_applied_total Command applications written to a regional store.
# TYPE regionstore_commands_applied_total counter
regionstore_commands_applied_total{region="r0",role="replica"} 7.0
regionstore_commands_applied_total{region="r5",role="replica"} 3.0
# HELP regionstore_commands_applied_created Created.
# TYPE regionstore_commands_applied_created gauge
regionstore_commands_applied_created{region="r0",role="replica"} 1.7e+09
# HELP regionstore_commands_stale_total Command applications skipped as stale.
# TYPE regionstore_commands_stale_total counter
regionstore_commands_stale_total{region="r0"} 2.0
# HELP regionstore_commands_parked_total Commands parked.
# TYPE regionstore_commands_parked_total counter
regionstore_commands_parked_total{region="r0",reason="marked_unavailable"} 40.0
"""


def test_a_region_gets_a_database_of_its_own_and_keeps_its_login() -> None:
    uri = with_database("mongodb://u:p@127.0.0.1:27017/?directConnection=true", "bench_r3")
    assert uri == "mongodb://u:p@127.0.0.1:27017/bench_r3?directConnection=true&authSource=admin"


def test_an_auth_source_given_is_kept() -> None:
    uri = with_database("mongodb://h:1/?authSource=users", "db")
    assert uri == "mongodb://h:1/db?authSource=users"


def test_store_writes_are_the_written_and_the_stale_ones_only() -> None:
    assert store_writes(METRICS) == 12.0


def test_the_services_run_the_map_on_topics_and_groups_of_their_own() -> None:
    run = MapRun.of(12, CommonSettings())
    env = run.environment("writer", 9999)
    assert [spec["name"] for spec in json.loads(env["REGIONSTORE_REGIONS"])] == [
        f"r{i}" for i in range(12)
    ]
    assert env["REGIONSTORE_KAFKA__COMMAND_TOPIC"] == f"{run.prefix}.commands"
    assert env["REGIONSTORE_KAFKA__WRITER_GROUP"] == f"{run.prefix}.writer"
    assert env["REGIONSTORE_KAFKA__PENDING_TOPIC_PREFIX"] == f"{run.prefix}.pending."
    assert env["REGIONSTORE_HTTP__PORT"] == "9999"
    databases = {uri.split("/")[3].split("?")[0] for uri in run.stores.values()}
    assert len(databases) == 12  # a database a region, three regions a store


def test_the_report_shows_the_measured_figures_beside_the_router_s() -> None:
    measured = [{"regions": 12, "measured": {"create": 2.0, "move": 3.8, "delete": 2.0}}]
    lines = _write_cost_lines(write_costs(), measured)
    (row,) = [line for line in lines if line.startswith("| 12 | 1 |")]
    assert "12.0 / 2.0 / 2.00" in row
    assert "/ 3.80" in row
