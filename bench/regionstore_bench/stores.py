"""The regional stores' processes: what the sampler watches per region, and their memory.

On FerretDB a region runs two servers: FerretDB, on the store port, and its PostgreSQL,
process-compose's ``<region>_pg``, whose postmaster forks a process per connection and per
background worker. The region's memory is FerretDB plus that whole tree. On mongod there is no
``<region>_pg``: the region is the one process on its port.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .probes import PhaseUsage

METHOD = (
    "RSS in MiB, sampled every 0.5 s: idle is the median over the idle phase, batch_peak the "
    "peak during the batch ingest, peak the peak over every phase. postgres is the postmaster "
    "(process-compose's <region>_pg) and every process below it, summed, so memory they share "
    "(shared buffers, libraries) counts once per process; pair is the store server plus its "
    "postgres at the same instant. pss_idle_end and pss_batch_end are the pair's proportional "
    "set size, shared pages counted once, as the idle and batch phases ended."
)


def postgres_of(region: str) -> str:
    """process-compose's name for a region's PostgreSQL."""
    return f"{region}_pg"


def pair_of(region: str) -> str:
    """The sampler's name for every process of a region's store together."""
    return f"{region}_store"


def trees(regions: Iterable[str]) -> tuple[str, ...]:
    """The processes to measure with all their descendants."""
    return tuple(postgres_of(region) for region in regions)


def groups(regions: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each region's store: the process on its port and its PostgreSQL, when there is one."""
    return {pair_of(region): (region, postgres_of(region)) for region in regions}


def _figures(phases: Mapping[str, PhaseUsage], name: str) -> dict[str, float]:
    batch = phases.get("batch")
    peaks = [
        usage.peak_rss_mb[name]
        for usage in phases.values()
        if not math.isnan(usage.peak_rss_mb.get(name, math.nan))
    ]
    return {
        "idle": phases["idle"].median_rss_mb.get(name, math.nan),
        "batch_peak": batch.peak_rss_mb.get(name, math.nan) if batch else math.nan,
        "peak": max(peaks, default=math.nan),
    }


def memory(phases: Mapping[str, PhaseUsage], regions: Iterable[str], server: str) -> dict[str, Any]:
    """Per region: the memory of its store server (``server``: ferretdb or mongod), of its
    PostgreSQL if it has one, and of both together."""
    batch = phases.get("batch")
    by_region: dict[str, Any] = {}
    for region in regions:
        postgres, pair = postgres_of(region), pair_of(region)
        processes: dict[str, Any] = {server: _figures(phases, region)}
        if any(postgres in usage.peak_rss_mb for usage in phases.values()):
            most = max(usage.processes.get(postgres, 0) for usage in phases.values())
            processes["postgres"] = _figures(phases, postgres) | {"processes_max": float(most)}
        by_region[region] = {
            "processes": processes,
            "pair": _figures(phases, pair)
            | {
                "pss_idle_end": phases["idle"].end_pss_mb.get(pair, math.nan),
                "pss_batch_end": batch.end_pss_mb.get(pair, math.nan) if batch else math.nan,
            },
        }
    return {
        "server": server,
        "postgres_found": any("postgres" in r["processes"] for r in by_region.values()),
        "method": METHOD,
        "regions": by_region,
    }
