"""Targets, machine facts, and the three result files: JSON, a Markdown summary, a PNG chart."""

from __future__ import annotations

import json
import math
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from . import stores
from .cost import cpu_per_write
from .cost import table as cost_table

SERVICES = ("gateway", "writer", "replicator", "recovery")
RSS_IDLE_MB = 150.0
RSS_INGEST_MB = 300.0
# End to end (issue 27): CPU per write at 20 writes/s against that at saturation, at most.
LOW_RATE_CPU_VS_SATURATION = 3.0
LOW_RATE = "20/s"
# Every filtered list query's p99 against the point read's p50 of the same run.
QUERY_VS_POINT_READ = 10.0
POINT_READ = "point_read"
PACKAGES = ("aiokafka", "pymongo", "redis", "fastapi", "uvicorn", "pydantic", "httpx")


def _target(
    name: str,
    measured: float,
    reference: float,
    limit: float,
    better: str,
    unit: str,
    invalid: str = "",
) -> dict[str, Any]:
    """One target: ``measured / reference`` compared with ``limit`` (``>=`` or ``<=``).

    ``invalid`` says why the figures cannot pass whatever their ratio (e.g. the answers they
    time were incomplete).
    """
    ratio = measured / reference if reference and not math.isnan(reference) else math.nan
    passed = ratio >= limit if better == ">=" else ratio <= limit
    return {
        "name": name,
        "measured": measured,
        "reference": reference,
        "ratio": ratio,
        "limit": limit,
        "comparison": better,
        "unit": unit,
        "pass": bool(passed) and not math.isnan(ratio) and not invalid,
        "note": invalid,
    }


def _incomplete(query: dict[str, Any]) -> str:
    bad = {
        condition: query[condition]["incomplete_answers"]
        + query[condition]["timeouts"]
        + query[condition]["errors"]
        for condition in ("all_up", "one_down")
    }
    if not any(bad.values()):
        return ""
    return "answers incomplete, timed out or failed: " + ", ".join(
        f"{condition} {count:.0f} of {query[condition]['queries']:.0f}"
        for condition, count in bad.items()
    )


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, from the figures of this run."""
    base = results["baselines"]
    insert = base["insert_many"]["docs_per_s"]
    found = [
        _target(
            "batch end-to-end applied/s >= 0.5 x raw insert_many docs/s",
            results["ingest_batch"]["applied_per_s"], insert, 0.5, ">=", "/s",
        ),
        _target(
            "drain rate >= 0.8 x raw insert_many docs/s",
            results["recovery"]["drain_per_s"], insert, 0.8, ">=", "/s",
        ),
        # The same target against the store at the size the drain writes into.
        _target(
            "drain rate >= 0.8 x raw insert_many docs/s into a store as full as the drained one",
            results["recovery"]["drain_per_s"], base["insert_many_full"]["docs_per_s"],
            0.8, ">=", "/s",
        ),
        # The raw round trip is measured one message at a time, so the accept it is held
        # against is too; the loaded latency (concurrency 32) is reported beside it.
        _target(
            "single-request accept p50 (one at a time) <= 2 x raw produce round trip p50",
            results["ingest_single"]["unloaded_accept_latency"]["p50_ms"],
            base["produce_rtt"]["p50_ms"], 2.0, "<=", "ms",
        ),
        _target(
            "single accepted/s >= 0.8 x a bare FastAPI endpoint's requests/s (same body, client)",
            results["ingest_single"]["accepted_per_s"],
            results["ingest_single"].get("bare_per_s", math.nan), 0.8, ">=", "/s",
            "" if "bare_per_s" in results["ingest_single"] else "no bare run in these results",
        ),
        _target(
            "query p99 one region down <= 1.5 x p99 all up",
            results["queries"]["one_down"]["p99_ms"],
            results["queries"]["all_up"]["p99_ms"], 1.5, "<=", "ms",
            _incomplete(results["queries"]),
        ),
    ]  # fmt: skip
    found += end_to_end_targets(results.get("end_to_end"))
    rss = results["rss_mb"]
    for service in SERVICES:
        found.append(
            _target(
                f"{service} RSS idle <= {RSS_IDLE_MB:.0f} MB",
                rss["idle"].get(service, math.nan), RSS_IDLE_MB, 1.0, "<=", "MB",
            )
        )  # fmt: skip
        found.append(
            _target(
                f"{service} RSS under batch ingest <= {RSS_INGEST_MB:.0f} MB",
                rss["batch_peak"].get(service, math.nan), RSS_INGEST_MB, 1.0, "<=", "MB",
            )
        )  # fmt: skip
    return found


def end_to_end_targets(e2e: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The end-to-end step's targets (issue 27); none for results from before it ran."""
    if not e2e:
        return []
    rounds = e2e["rounds"]
    low, high = cpu_per_write(rounds, LOW_RATE), cpu_per_write(rounds, "saturation")
    restated = e2e.get("restated", {})
    live = restated.get("live_writes_per_s", math.nan)
    return [
        _target(
            f"end to end: CPU per write at {LOW_RATE} <= {LOW_RATE_CPU_VS_SATURATION:g} x at "
            "saturation (Kafka, gateway, writer, replicator, idle included)",
            low, high, LOW_RATE_CPU_VS_SATURATION, "<=", "ms",
        ),
        _target(
            f"end to end: drain under {_n(live)} live writes/s >= 0.8 x raw insert_many docs/s",
            restated.get("drain_under_live_writes_per_s", math.nan),
            restated.get("insert_many_docs_per_s", math.nan), 0.8, ">=", "/s",
            "" if not math.isnan(live) else "no drain under live writes in these results",
        ),
        _target(
            "end to end: single accepted/s, consumers running, >= 0.8 x a bare FastAPI "
            "endpoint's requests/s",
            restated.get("single_accepted_per_s", math.nan),
            restated.get("bare_per_s", math.nan), 0.8, ">=", "/s",
        ),
    ]  # fmt: skip


def end_to_end_lines(e2e: dict[str, Any] | None) -> list[str]:
    """What a user gets: sustained workloads, the reference app, CPU per write at each rate."""
    if not e2e:
        return []
    singles, restated, ref = e2e["singles"], e2e.get("restated", {}), e2e["reference"]
    return [
        "",
        "## End to end, every process running",
        "",
        "| workload | accepted/s | applied/s end to end (audited) | accept→applied p50 / p99 |",
        "| --- | --- | --- | --- |",
        f"| single creates, {_n(singles['concurrency'])} connections, "
        f"{_n(singles['seconds'], 1)} s | {_n(singles['accepted_per_s'])} | "
        f"{_n(singles['applied_per_s'])} | {_n(singles['accept_to_applied_p50_ms'])} / "
        f"{_n(singles['accept_to_applied_p99_ms'])} ms |",
        f"| `:batch` ingest (scenario 3) | {_n(restated.get('batch_accepted_per_s'))} | "
        f"{_n(restated.get('batch_applied_per_s'))} | "
        f"{_n(restated.get('batch_accept_to_applied_p50_ms'))} / "
        f"{_n(restated.get('batch_accept_to_applied_p99_ms'))} ms |",
        reference_row(ref),
        "",
        f"Single creates applied end to end: {_n(restated.get('single_applied_to_reference'), 2)}"
        " x the original app's requests/s; accepted with the consumers running: "
        f"{_n(restated.get('single_accepted_to_bare'), 2)} x the bare endpoint's "
        f"{_n(restated.get('bare_per_s'))} requests/s. Drain of a parked backlog while "
        f"{_n(restated.get('live_writes_per_s'))} live writes/s are applied (scenario 7, flat "
        f"out): {_n(restated.get('drain_under_live_writes_per_s'))}/s, "
        f"{_n(restated.get('drain_under_live_writes_to_insert_many'), 2)} x raw insert_many.",
        "",
        "CPU per write, idle included, from /proc; writes per consumer batch and per placement "
        "commit:",
        "",
        cost_table(e2e),
    ]


def reference_row(ref: dict[str, Any]) -> str:
    """The original app's row of the end-to-end table; "not run" without a figure when it was
    not given."""
    if not ref["run"]:
        return f"| original app | {ref['note']} | | |"
    return (
        f"| original app (`PUT /update-record`: home and backup written in the request), "
        f"{_n(ref['concurrency'])} connections, {_n(ref['seconds'], 1)} s | "
        f"{_n(ref['requests_per_s'])} | {_n(ref['requests_per_s'])} (in the request) | "
        f"{_n(ref['latency']['p50_ms'], 1)} / {_n(ref['latency']['p99_ms'], 1)} ms "
        f"(request) |"
    )


def _failures(figures: dict[str, Any]) -> float:
    return float(figures["incomplete_answers"] + figures["timeouts"] + figures["errors"])


def query_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each filtered list-query shape's p99 against the point read's p50, all regions up.

    Empty for results from before the point read was measured.
    """
    query = results["queries"]
    by_kind = query["all_up"]["by_kind"]
    point = by_kind.get(POINT_READ)
    if point is None:
        return []
    found = []
    for shape in query.get("filtered_shapes", []):
        figures = by_kind[shape]
        bad = {shape: _failures(figures), "point read": _failures(point)}
        invalid = ", ".join(f"{name} {count:.0f}" for name, count in bad.items() if count)
        found.append(
            _target(
                f"query {shape} p99 <= {QUERY_VS_POINT_READ:g} x point read p50",
                figures["p99_ms"], point["p50_ms"], QUERY_VS_POINT_READ, "<=", "ms",
                f"answers incomplete, timed out or failed: {invalid}" if invalid else "",
            )
            | {"shape": shape}
        )  # fmt: skip
    return found


def _first_line(path: str, pattern: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return "unknown"
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def machine(versions: dict[str, str]) -> dict[str, Any]:
    """Cores, memory, CPU, OS and the versions of what ran."""
    mem_kb = _first_line("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "cores": float(os.cpu_count() or 0),
        "memory_gib": int(mem_kb) / 2**20 if mem_kb.isdigit() else math.nan,
        "cpu_model": _first_line("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
        **versions,
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    """The full results."""
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def write_markdown(results: dict[str, Any], path: Path, chart: str) -> None:
    """A short summary: headline figures, targets with pass/miss, where the CPU went."""
    base = results["baselines"]
    single = results["ingest_single"]
    batch = results["ingest_batch"]
    rec = results["recovery"]
    query = results["queries"]
    meta = results["meta"]
    host = meta["machine"]
    lines = [
        f"# regionstore benchmark ({meta['plan']['name']} run)",
        "",
        f"{meta['started_at']}, {meta['duration_s']:.0f} s; {host['cores']:.0f} cores "
        f"({host['cpu_model']}), {host['memory_gib']:.1f} GiB; Kafka {host['kafka']}, "
        f"stores {host['store']}, Python {host['python']}. Every service and the bench share "
        f"the machine; its 1-minute load average ran {_load_range(results)} during the phases "
        f"(anything above {host['cores']:.0f} means other work competed for the cores). Chart: "
        f"`{chart}`.",
        "",
        "| scenario | figure | value |",
        "| --- | --- | --- |",
        f"| baseline | raw produce (acks=all, idempotent), {_n(base['kafka_produce']['messages'])} "
        f"msgs of {_n(base['kafka_produce']['message_bytes_mean'])} B | "
        f"{_n(base['kafka_produce']['msgs_per_s'])} msg/s |",
        f"| baseline | raw consume | {_n(base['kafka_consume']['msgs_per_s'])} msg/s |",
        f"| baseline | produce round trip p50 / p99 | {_n(base['produce_rtt']['p50_ms'], 2)} / "
        f"{_n(base['produce_rtt']['p99_ms'], 2)} ms |",
        f"| baseline | raw insert_many into {base['insert_many']['region']}"
        f"{_with_indexes(base['insert_many'])} | {_n(base['insert_many']['docs_per_s'])} docs/s |",
        f"| baseline | raw insert_many into {base['insert_many_full']['region']} holding "
        f"{_n(base['insert_many_full']['holding'])} documents (as at the drain)"
        f"{_with_indexes(base['insert_many_full'])} | "
        f"{_n(base['insert_many_full']['docs_per_s'])} docs/s |",
        f"| singles | {_n(single['requests'])} POSTs at concurrency {_n(single['concurrency'])} | "
        f"{_n(single['accepted_per_s'])} accepted/s |",
        f"| singles | accept latency p50 / p99 | {_n(single['accept_latency']['p50_ms'], 1)} / "
        f"{_n(single['accept_latency']['p99_ms'], 1)} ms |",
        f"| singles | unloaded (concurrency 1) accept p50 / p99 | "
        f"{_n(single['unloaded_accept_latency']['p50_ms'], 1)} / "
        f"{_n(single['unloaded_accept_latency']['p99_ms'], 1)} ms |",
        *(
            [
                f"| singles | bare FastAPI endpoint, same bodies and concurrency | "
                f"{_n(single['bare_per_s'])} requests/s (gateway {single['ratio_to_bare']:.2f} x) |"
            ]
            if "bare_per_s" in single
            else []
        ),
        *_singles_cpu_lines(single),
        f"| batch | {_n(batch['customers'])} customers, {_n(batch['batch_size'])}/request, "
        f"{_n(batch['concurrency'])} concurrent | {_n(batch['accepted_per_s'])} accepted/s |",
        f"| batch | end-to-end applied (home + replica, audited) | "
        f"{_n(batch['applied_per_s'])} customers/s |",
        f"| batch | apply latency p50 / p99 (202 to applied in both) | "
        f"{_n(batch['apply_latency']['both_p50_ms'] / 1000, 1)} / "
        f"{_n(batch['apply_latency']['both_p99_ms'] / 1000, 1)} s |",
        f"| recovery | {_n(rec['writes'])} writes, {rec['region']} down: backlog | "
        f"{_n(rec['backlog_at_flip'])} parked |",
        f"| recovery | drain time / rate (steady) | {_n(rec['drain_seconds'], 1)} s / "
        f"{_n(rec['drain_per_s'])}/s ({_n(rec['steady_drain_per_s'])}/s) |",
        f"| queries | {_n(query['queries'])} list queries of every shape, all up, p50 / p99 | "
        f"{_n(query['all_up']['p50_ms'], 1)} / {_n(query['all_up']['p99_ms'], 1)} ms "
        f"({_query_flags(query['all_up'])}) |",
        *_point_read_row(query),
        f"| queries | {query['down_region']} down (replica fallback), p50 / p99 | "
        f"{_n(query['one_down']['p50_ms'], 1)} / {_n(query['one_down']['p99_ms'], 1)} ms "
        f"({_query_flags(query['one_down'])}) |",
    ]
    audits = {
        "singles": single["audit"],
        "batch": batch["audit"],
        "recovery": rec["audit"],
    }
    lines += [
        "",
        "Audit (lost / duplicated / stale / resurrected): "
        + "; ".join(
            f"{name} {_n(a['lost'])}/{_n(a['duplicated'])}/{_n(a['stale'])}/"
            f"{_n(a['resurrected'])} of {_n(a['checked'])}"
            for name, a in audits.items()
        )
        + ".",
    ]
    lines += end_to_end_lines(results.get("end_to_end"))
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | reference | ratio | limit | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in results["targets"] + results.get("query_targets", []):
        digits = 1 if t["unit"] in ("ms", "MB") else 0
        lines.append(
            f"| {t['name']} | {_n(t['measured'], digits)} {t['unit']} | "
            f"{_n(t['reference'], digits)} {t['unit']} | {_n(t['ratio'], 2)} | "
            f"{t['comparison']} {t['limit']:g} | {'pass' if t['pass'] else '**miss**'}"
            f"{' (' + t['note'] + ')' if t.get('note') else ''} |"
        )
    lines += _query_lines(query, results.get("query_targets", []))
    lines += _write_cost_lines(results.get("write_cost"), results.get("write_cost_measured"))
    lines += paced_drain_lines(results.get("paced_drain"))
    rss = results["rss_mb"]
    store_memory = results.get("store_rss_mb")
    pairs = {stores.pair_of(region) for region in (store_memory or {}).get("regions", {})}
    lines += [
        "",
        "## Memory (RSS, MiB) and CPU",
        "",
        "| process | idle | peak under batch | peak overall |",
        "| --- | --- | --- | --- |",
    ]
    for name in (n for n in rss["idle"] if n not in pairs):
        lines.append(
            f"| {name} | {_n(rss['idle'][name])} | {_n(rss['batch_peak'].get(name, math.nan))} "
            f"| {_n(rss['peak'].get(name, math.nan))} |"
        )
    lines += _store_lines(store_memory)
    lines += ["", "CPU share by process (1.00 = one core busy for the whole phase):", ""]
    cpu = results["cpu_share"]
    names = sorted({n for phase in cpu.values() for n in phase})
    lines.append("| phase | " + " | ".join(names) + " |")
    lines.append("| --- |" + " --- |" * len(names))
    for phase, shares in cpu.items():
        cells = " | ".join(_n(shares.get(n, math.nan), 2) for n in names)
        lines.append(f"| {phase} | {cells} |")
    lines += ["", f"Settings and every other figure: `{path.with_suffix('.json').name}`.", ""]
    path.write_text("\n".join(lines))


def paced_drain_lines(paced: dict[str, Any] | None) -> list[str]:
    """The paced-drain round: live apply latency and drain rate, with pacing and without."""
    if not paced:
        return []
    lines = [
        "",
        "## A backlog drained under live writes, paced and flat out",
        "",
        "| mode | backlog | live/s | drain/s | live p50 / p99 before | live p50 / p99 during"
        " the drain | load 1m |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, m in paced["modes"].items():
        before, during = m["live_before"], m["live_during_drain"]
        load = " to ".join(f"{x:.0f}" for x in m.get("load_1m", []))
        lines.append(
            f"| {mode} | {_n(m['backlog'])} | {_n(m['live_rate_per_s'])} | "
            f"{_n(m['drain_per_s'])} | {_n(before['p50_s'], 2)} / {_n(before['p99_s'], 2)} s | "
            f"{_n(during['p50_s'], 2)} / {_n(during['p99_s'], 2)} s | {load} |"
        )
    return lines


def _write_cost_lines(
    costs: list[dict[str, Any]] | None, measured: list[dict[str, Any]] | None = None
) -> list[str]:
    """Store writes per customer write: every region (before) against the placement table,
    counted from the router, and as the stores saw them where measured."""
    if not costs:
        return []
    live = {m["regions"]: m["measured"] for m in measured or ()}
    lines = [
        "",
        "## Store writes per customer write",
        "",
        "Counted from the router (one target is one store write), over each customer's create, "
        "move to another home and delete: before the placement table every write reached every "
        "region; the consumers now route through the table "
        "(`regionstore_shared.placement_log`): the placement plus the regions the customer left. "
        "The third figure, with one replica, is measured: a writer and a replicator of the map's "
        "own applied every customer's create, move and delete to the local stores (a database a "
        "region), and counted their store writes (`regionstore_bench.region_maps`).",
        "",
        "| regions | replicas | create: before / table / measured | move: before / table / "
        "measured | delete: before / table / measured |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cost in costs:
        today, table = cost["today"], cost["table"]
        seen = live.get(cost["regions"]) if cost["replicas"] == 1 else None
        cells = " | ".join(
            f"{_n(today[kind], 1)} / {_n(table[kind], 1)}"
            + (f" / {_n(seen[kind], 2)}" if seen is not None else "")
            for kind in ("create", "move", "delete")
        )
        lines.append(f"| {cost['regions']} | {cost['replicas']} | {cells} |")
    return lines


def _with_indexes(insert: dict[str, Any]) -> str:
    indexes = insert.get("indexes")
    if not isinstance(indexes, list):
        return ""
    secondary = ", ".join(name for name in indexes if name != "_id_") or "none"
    text = f" (with the services' indexes: {secondary}"
    live = insert.get("customer_collection_indexes") or indexes
    if live != indexes:
        text += f"; **not like for like**: its customers collection has {', '.join(live)}"
    return text + ")"


def _point_read_row(query: dict[str, Any]) -> list[str]:
    point = query["all_up"].get("by_kind", {}).get(POINT_READ)
    if point is None:
        return []
    return [
        f"| queries | {_n(point['samples'])} point reads (GET /v1/customers/{{id}}), all up, "
        f"p50 / p99 | {_n(point['p50_ms'], 1)} / {_n(point['p99_ms'], 1)} ms |"
    ]


def _indexes(by_region: dict[str, list[str]]) -> str:
    if not by_region:
        return "not recorded"
    distinct = {tuple(names) for names in by_region.values()}
    if len(distinct) == 1:
        return ", ".join(next(iter(distinct))) + " (every region)"
    return "; ".join(f"{region} {', '.join(names)}" for region, names in by_region.items())


def _query_lines(query: dict[str, Any], found: list[dict[str, Any]]) -> list[str]:
    """The table of query shapes: p50/p99 and the ratio to the point read's p50."""
    up, down = query["all_up"], query["one_down"]
    point = up["by_kind"].get(POINT_READ)
    if point is None:
        return []
    by_shape = {t["shape"]: t for t in found if "shape" in t}
    requests = query.get("shape_requests", {})
    documents = ", ".join(f"{r} {_n(c)}" for r, c in query["store_documents"].items())
    lines = [
        "",
        "## Queries by shape",
        "",
        f"Each shape {_n(query['queries_per_shape_planned'])} times per condition (fewer if the "
        f"{_n(query['time_budget_s'])} s budget ran out), one at a time (concurrency "
        f"{_n(query['concurrency'])}), in rounds of every shape in a shuffled order; the "
        f"gateway's default page size. Documents per region: {documents} "
        f"({_n(query['bench_customers'])} customers of the bench's batch ingest). Indexes on "
        f"the customers collections: {_indexes(query.get('store_indexes', {}))}. Target: the "
        f"p99 of every filtered shape <= {QUERY_VS_POINT_READ:g} x the point read's p50, all "
        "regions up.",
        "",
        "| shape | request | samples | rows per answer | p50 ms | p99 ms "
        f"| p99 / point-read p50 | result | {query['down_region']} down: p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, figures in up["by_kind"].items():
        target = by_shape.get(shape)
        if shape == POINT_READ:
            ratio, result = "(reference)", ""
        else:
            ratio = _n(figures["p99_ms"] / point["p50_ms"], 2) if point["p50_ms"] else "n/a"
            result = "not a target" if target is None else "pass" if target["pass"] else "**miss**"
            if target is not None and target["note"]:
                result += f" ({target['note']})"
        samples = _n(figures["samples"])
        if figures.get("no_next_page"):
            samples += f" ({_n(figures['no_next_page'])} without a second page)"
        if figures.get("too_broad"):
            samples += f" ({_n(figures['too_broad'])} refused: more than max_filter_records)"
        gone = down["by_kind"].get(shape, {})
        lines.append(
            f"| {shape} | {requests.get(shape, '')} | {samples} | {_n(figures['rows_mean'], 1)} "
            f"| {_n(figures['p50_ms'], 1)} | {_n(figures['p99_ms'], 1)} | {ratio} | {result} "
            f"| {_n(gone.get('p50_ms', math.nan), 1)} / {_n(gone.get('p99_ms', math.nan), 1)} |"
        )
    return lines


def _store_lines(memory: dict[str, Any] | None) -> list[str]:
    """The table of each region's store processes: idle and under the batch ingest."""
    if not memory:
        return []
    server = memory["server"]
    lines = [
        "",
        "### Regional stores",
        "",
        memory["method"],
        "",
        f"| region | {server} idle / batch peak | postgres idle / batch peak (processes, most) "
        "| pair idle | pair batch peak | pair peak overall | pair PSS end of idle / batch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for region, entry in memory["regions"].items():
        own = entry["processes"][server]
        postgres = entry["processes"].get("postgres")
        pg_cell = (
            f"{_n(postgres['idle'])} / {_n(postgres['batch_peak'])} "
            f"({_n(postgres['processes_max'])})"
            if postgres
            else f"none ({stores.postgres_of(region)} not found)"
        )
        pair = entry["pair"]
        lines.append(
            f"| {region} | {_n(own['idle'])} / {_n(own['batch_peak'])} | {pg_cell} "
            f"| {_n(pair['idle'])} | {_n(pair['batch_peak'])} | {_n(pair['peak'])} "
            f"| {_n(pair['pss_idle_end'])} / {_n(pair['pss_batch_end'])} |"
        )
    return lines


def _query_flags(summary: dict[str, Any]) -> str:
    return (
        f"{_n(summary['incomplete_answers'])} incomplete, {_n(summary['timeouts'])} timed out, "
        f"{_n(summary['errors'])} errors"
    )


def _singles_cpu_lines(single: dict[str, Any]) -> list[str]:
    """What the singles' rounds cost the servers, and whether the consumers ran beside them
    (results of runs that measured it)."""
    if "consumers_stopped_during_rounds" not in single:
        return []
    applied = (
        f"{_n(single['applied_s_after_rounds'], 1)} s "
        f"({_n(single['applied_per_s_after_rounds'])} customers/s)"
    )
    consumers = (
        "writer and replicator stopped during both sets of rounds, then started"
        if single["consumers_stopped_during_rounds"]
        else "writer and replicator applying beside the rounds (no process-compose to stop them)"
    )
    return [
        f"| singles | server CPU per request: gateway (per accepted write) / bare | "
        f"{_n(single['cpu_us_per_accepted'])} / {_n(single['bare_cpu_us_per_request'])} µs |",
        f"| singles | {consumers}; every write applied after the rounds in | {applied} |",
    ]


def _load_range(results: dict[str, Any]) -> str:
    loads = [
        phase["machine_load_1m"]
        for phase in results["cpu_share"].values()
        if "machine_load_1m" in phase
    ]
    return f"{min(loads):.1f} to {max(loads):.1f}" if loads else "unknown"


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], unit: str) -> None:
    positions = range(len(labels))
    clean = [0.0 if math.isnan(v) else v for v in values]
    ax.barh(positions, clean, color=colors)
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(max(min((v for v in clean if v > 0), default=1) / 3, 1e-3), max(clean) * 6)
    for y, value in zip(positions, values, strict=True):
        ax.text(
            value if value > 0 else 1, y, f"  {_n(value, 0 if value >= 10 else 1)} {unit}",
            va="center", fontsize=8,
        )  # fmt: skip


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput, latency, targets and memory in one PNG."""
    base = results["baselines"]
    single = results["ingest_single"]
    batch = results["ingest_batch"]
    rec = results["recovery"]
    query = results["queries"]
    raw, system = "#8c8c8c", "#1f77b4"
    figure, axes = plt.subplots(3, 2, figsize=(15, 15))
    (throughput, latency), (target_ax, memory), (shapes_ax, store_ax) = axes
    _bars(
        throughput,
        [
            "raw Kafka produce",
            "raw Kafka consume",
            "raw insert_many (1 store)",
            "raw insert_many (full store)",
            "singles accepted",
            "batch accepted",
            "batch applied end-to-end",
            "recovery drain",
        ],
        [
            base["kafka_produce"]["msgs_per_s"],
            base["kafka_consume"]["msgs_per_s"],
            base["insert_many"]["docs_per_s"],
            base["insert_many_full"]["docs_per_s"],
            single["accepted_per_s"],
            batch["accepted_per_s"],
            batch["applied_per_s"],
            rec["drain_per_s"],
        ],
        [raw, raw, raw, raw, system, system, system, system],
        "/s",
    )
    throughput.set_title("Throughput per second (grey: raw baselines)")
    lat_labels: list[str] = []
    lat_values: list[float] = []
    lat_colors: list[str] = []
    for label, summary, color in (
        ("raw produce round trip", base["produce_rtt"], raw),
        ("single accept, concurrency 1", single["unloaded_accept_latency"], system),
        (
            f"single accept, concurrency {single['concurrency']:.0f}",
            single["accept_latency"],
            system,
        ),
        ("list query, all regions up", query["all_up"], system),
        (f"list query, {query['down_region']} down", query["one_down"], system),
        *(
            [("point read, all regions up", query["all_up"]["by_kind"][POINT_READ], system)]
            if POINT_READ in query["all_up"].get("by_kind", {})
            else []
        ),
    ):
        for q in ("p50", "p99"):
            lat_labels.append(f"{label} {q}")
            lat_values.append(summary[f"{q}_ms"])
            lat_colors.append(color if q == "p50" else "#ff7f0e")
    apply = batch["apply_latency"]
    lat_labels += ["batch 202 to applied (home+replica) p50", "batch 202 to applied p99"]
    lat_values += [apply["both_p50_ms"], apply["both_p99_ms"]]
    lat_colors += [system, "#ff7f0e"]
    _bars(latency, lat_labels, lat_values, lat_colors, "ms")
    latency.set_title("Latency, ms (blue: p50, orange: p99)")
    ts = results["targets"] + results.get("query_targets", [])
    score = [
        (t["ratio"] / t["limit"]) if t["comparison"] == ">=" else (t["limit"] / t["ratio"])
        for t in ts
    ]
    positions = range(len(ts))
    target_ax.barh(
        positions,
        [0.0 if math.isnan(s) else s for s in score],
        color=["#2ca02c" if t["pass"] else "#d62728" for t in ts],
    )
    target_ax.axvline(1.0, color="black", linewidth=1)
    target_ax.set_xscale("log")
    target_ax.xaxis.set_minor_formatter(NullFormatter())
    target_ax.set_yticks(list(positions), [_short(t["name"]) for t in ts], fontsize=8)
    target_ax.invert_yaxis()
    target_ax.set_title("Targets: headroom (>= 1 passes; green pass, red miss)")
    for y, (t, s) in enumerate(zip(ts, score, strict=True)):
        note = " - answers incomplete" if t.get("note") else ""
        target_ax.text(
            s if s > 0 else 1, y, f"  ratio {_n(t['ratio'], 2)} (limit {t['limit']:g}){note}",
            va="center", fontsize=7,
        )  # fmt: skip
    rss = results["rss_mb"]
    names = [n for n in SERVICES if n in rss["idle"]]
    width = 0.38
    xs = range(len(names))
    memory.bar([x - width / 2 for x in xs], [rss["idle"][n] for n in names], width, label="idle")
    memory.bar(
        [x + width / 2 for x in xs],
        [rss["batch_peak"].get(n, math.nan) for n in names],
        width,
        label="peak under batch ingest",
    )
    memory.axhline(RSS_IDLE_MB, color="#1f77b4", linestyle="--", linewidth=1, label="idle limit")
    memory.axhline(
        RSS_INGEST_MB, color="#ff7f0e", linestyle="--", linewidth=1, label="ingest limit"
    )
    memory.set_xticks(list(xs), names)
    memory.set_ylabel("RSS, MiB")
    memory.set_title("Service memory")
    memory.legend(fontsize=8)
    _shapes_chart(shapes_ax, query)
    _stores_chart(store_ax, results.get("store_rss_mb"))
    meta = results["meta"]
    figure.suptitle(
        f"regionstore bench ({meta['plan']['name']}), {meta['started_at']}, "
        f"{meta['machine']['cores']:.0f} cores, everything on one machine"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _shapes_chart(ax: Any, query: dict[str, Any]) -> None:
    by_kind = query["all_up"].get("by_kind", {})
    point = by_kind.get(POINT_READ)
    ax.set_title("Query latency by shape, all regions up, ms (blue: p50, orange: p99)")
    if point is None:
        ax.text(0.5, 0.5, "no point read in these results", ha="center", transform=ax.transAxes)
        return
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for shape, figures in by_kind.items():
        for q, color in (("p50", "#1f77b4"), ("p99", "#ff7f0e")):
            labels.append(f"{shape} {q}")
            values.append(figures[f"{q}_ms"])
            colors.append(color)
    _bars(ax, labels, values, colors, "ms")
    limit = QUERY_VS_POINT_READ * point["p50_ms"]
    if limit > 0:
        ax.axvline(limit, color="#d62728", linestyle="--", linewidth=1)
        ax.text(limit, 0, f" {QUERY_VS_POINT_READ:g} x point-read p50", fontsize=7, va="center")


def _stores_chart(ax: Any, memory: dict[str, Any] | None) -> None:
    ax.set_title("Store memory per region (server + PostgreSQL), MiB", fontsize=10)
    if not memory:
        ax.text(0.5, 0.5, "not measured in these results", ha="center", transform=ax.transAxes)
        return
    regions = list(memory["regions"])
    pairs = [memory["regions"][region]["pair"] for region in regions]
    xs = range(len(regions))
    width = 0.27
    for offset, (key, label) in enumerate(
        (
            ("idle", "RSS idle"),
            ("batch_peak", "RSS peak under batch ingest"),
            ("pss_batch_end", "PSS after the batch ingest"),
        )
    ):
        ax.bar(
            [x + (offset - 1) * width for x in xs],
            [0.0 if math.isnan(pair[key]) else pair[key] for pair in pairs],
            width,
            label=label,
        )
    ax.set_xticks(list(xs), regions)
    ax.set_ylabel("MiB")
    tallest = max((v for pair in pairs for v in pair.values() if not math.isnan(v)), default=1.0)
    ax.set_ylim(0, tallest * 1.3)
    ax.legend(fontsize=8, loc="upper right")


def _short(name: str) -> str:
    return (
        name.replace("raw insert_many docs/s", "insert_many")
        .replace("single-request accept", "single accept")
        .replace("raw produce round trip", "produce RTT")
    )
