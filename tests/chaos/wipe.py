"""A wiped region in a chaos round, and the repair that brings it back.

The region's store processes are stopped through process-compose, its data directory is
deleted, and they are started again: the store comes back empty (PostgreSQL initialises a new
cluster; a mongod starts a new replica set). The round waits until the failure detector holds
the region ``available`` again, as it would for an outage, then goes on. Writes keep flowing
all the while; the customers the region held before are missing there until
``regionstore repair`` (run by the round before its audit, as an operator would) publishes their
newest versions again.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.stack import Stack

BACK_WITHIN_S = 300.0
"""As long as the region may take to be ``available`` again (a busy machine's initdb included)."""
REPAIR_WITHIN_S = 900.0
WATCH_EVERY_S = 0.5
UNREACHABLE = 2
"""``regionstore repair``'s exit status when a store or Kafka cannot be reached."""


class WipeError(AssertionError):
    """The region could not be wiped, or did not come back."""


def data_dir(region: str, with_postgres: bool) -> Path:
    """Where the region's store keeps its data (deploy/local/bin/postgres.sh, store.sh)."""
    stores = Path(os.environ.get("RUN_DIR", ".run")) / "stores" / region
    return stores / "pg" if with_postgres else stores


async def wipe(stack: Stack, http: httpx.AsyncClient, region: str) -> str:
    """Stop ``region``'s store processes, delete its data, start them, wait until available."""
    started = time.monotonic()
    postgres = f"{region}_pg"
    with_postgres = postgres in await stack.processes()
    # FerretDB first: it would otherwise log and retry against a PostgreSQL going away.
    await stack.stop(region)
    if with_postgres:
        await stack.stop(postgres)
    shutil.rmtree(data_dir(region, with_postgres))
    # A new cluster is initialised first (initdb, the DocumentDB extension): on a loaded
    # machine that takes longer than a restart.
    for process in (postgres, region) if with_postgres else (region,):
        await stack.start(process, wait=False)
        await stack.wait_ready(process, within_s=BACK_WITHIN_S)
    ready_s = time.monotonic() - started
    deadline = time.monotonic() + BACK_WITHIN_S
    seen = []
    while (status := await _status(http, region)) != "available":
        if status not in seen:
            seen.append(status)
        if time.monotonic() > deadline:
            raise WipeError(f"{region} is {status} {BACK_WITHIN_S:.0f}s after its wipe")
        await asyncio.sleep(WATCH_EVERY_S)
    took_s = time.monotonic() - started
    went = f", was {'/'.join(seen)}" if seen else ""
    return f"{region} empty and ready after {ready_s:.1f}s, available after {took_s:.1f}s{went}"


async def _status(http: httpx.AsyncClient, region: str) -> str:
    try:
        response = await http.get("/v1/regions")
        regions = response.json()["regions"]
    except (httpx.TransportError, ValueError, KeyError):
        return "unknown (the gateway did not answer)"
    return next((str(r["status"]) for r in regions if r["name"] == region), "missing")


@dataclass(frozen=True, slots=True)
class Repaired:
    """What ``regionstore repair --json`` reported for a wiped region."""

    region: str
    exit_code: int
    report: dict[str, Any]
    seconds: float

    @property
    def whole(self) -> bool:
        """Nothing left diverging: nothing lost for good, no repair failed."""
        return self.exit_code == 0 and bool(self.report.get("whole"))

    @property
    def note(self) -> str:
        """One line for the round's report."""
        if not self.report:
            return f"repair of {self.region} failed (exit {self.exit_code})"
        found = self.report.get("found", {}).get(self.region, {})
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(found.items())) or "none"
        r = self.report
        return (
            f"repair after wiping {self.region}: found {kinds}; republished "
            f"{r.get('republished', 0):,}, tombstoned {r.get('tombstoned', 0):,}, failed "
            f"{r.get('failed', 0)}, unrepairable {r.get('unrepairable', 0)}, left settling "
            f"{r.get('settling', 0)}; {'whole' if self.whole else 'NOT whole'}, "
            f"{self.seconds:.1f}s"
        )


async def repair(region: str) -> Repaired:
    """Run ``regionstore repair --region R --json --grace 0``, as an operator would once the
    load has stopped and settled (nothing left in flight: no grace needed)."""
    # The venv's own console script, beside its Python: the command an operator types.
    command = Path(sys.executable).with_name("regionstore")
    if not command.exists():
        raise WipeError(f"no {command}: make sync")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(command),
        "repair",
        "--region",
        region,
        "--json",
        "--grace",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), REPAIR_WITHIN_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise WipeError(f"regionstore repair ran over {REPAIR_WITHIN_S:.0f}s") from None
    code = process.returncode if process.returncode is not None else UNREACHABLE
    try:
        report: dict[str, Any] = json.loads(out) if code in (0, 1) else {}
    except ValueError:
        report = {}
    if not report:
        raise WipeError(f"regionstore repair exit {code}: {err.decode(errors='replace')[-1500:]}")
    return Repaired(region, code, report, round(time.monotonic() - started, 1))
