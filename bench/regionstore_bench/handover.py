"""Placement tables at size: what a consumer holds in memory, and how soon it applies again
after it was killed and its partitions were assigned to it anew.

For the writer, then the replicator, of the stack of ``make up``: read its resident memory (its
own ``process_resident_memory_bytes``), SIGKILL it (process-compose starts it again) while a
trickle of creates keeps every partition busy, and time from the kill to ready, to its tables
loaded (its log's "placement tables loaded", which also gives the load's own seconds) and to
its first applied command (its applied counter starts at zero in the new process).
``make bench-handover`` writes bench/results/handover-<size>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx

from regionstore_shared.api_key import auth_headers
from regionstore_shared.ports import port, service_url

from .env import compose_url
from .scaleout import RESULTS, applied_by_role

ROLES = {"writer": ("WRITER_PORT", "home"), "replicator": ("REPLICATOR_PORT", "replica")}
_RSS = re.compile(r"^process_resident_memory_bytes (\S+)$", re.MULTILINE)
_ENTRIES = re.compile(r"^regionstore_placement_entries\{[^}]*\} (\S+)$", re.MULTILINE)
TRICKLE_PER_S = 40
WITHIN_S = 600.0
ZIPS = ((1310, "SP"), (45000, "BA"), (75000, "GO"))


@dataclass(frozen=True, slots=True)
class Handover:
    """One consumer's restart, seconds from its kill."""

    service: str
    rss_before_mb: float
    rss_after_mb: float
    ready_s: float
    tables_loaded_s: float
    table_load_s: float
    first_applied_s: float


def rss_mb(metrics: str) -> float:
    """The resident memory a service's metrics page reports, in MB."""
    found = _RSS.search(metrics)
    return float(found.group(1)) / 1e6 if found else float("nan")


def entries(metrics: str) -> int:
    """Customers in the placement tables a service's metrics page reports."""
    return round(sum(float(value) for value in _ENTRIES.findall(metrics)))


def loaded_after(log_lines: list[str], since: float) -> tuple[float, float] | None:
    """The first "placement tables loaded" logged at or after ``since`` (epoch seconds): its time
    and the load's own seconds."""
    for line in log_lines:
        if "placement tables loaded" not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            at = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                return at, float(record["seconds"])
    return None


class Bench:
    def __init__(self, client: httpx.AsyncClient, log_dir: Path) -> None:
        self._client = client
        self._log_dir = log_dir
        self._gateway = service_url(port("GATEWAY_PORT"))

    async def metrics(self, service: str) -> str | None:
        url = service_url(port(ROLES[service][0]))
        with contextlib.suppress(httpx.HTTPError):
            answer = await self._client.get(f"{url}/metrics/", follow_redirects=True)
            if answer.status_code == 200:
                return answer.text
        return None

    async def trickle(self, stop: asyncio.Event) -> None:
        """Creates in every region, ``TRICKLE_PER_S`` a second, until ``stop``."""
        sent = 0
        while not stop.is_set():
            zip_code, state = ZIPS[sent % len(ZIPS)]
            body = {
                "customer_id": f"bench-handover-{uuid.uuid4().hex}",
                "customer_unique_id": uuid.uuid4().hex,
                "customer_zip_code_prefix": zip_code,
                "customer_city": "handover",
                "customer_state": state,
            }
            with contextlib.suppress(httpx.HTTPError):
                await self._client.post(f"{self._gateway}/v1/customers", json=body)
            sent += 1
            await asyncio.sleep(1 / TRICKLE_PER_S)  # the trickle's pace

    async def handover(self, service: str) -> Handover:
        before = await self.metrics(service)
        if before is None:
            raise SystemExit(f"{service} does not answer: is the stack up (make up)?")
        state = (await self._client.get(f"{compose_url()}/process/{service}")).json()
        killed_at = time.time()
        os.kill(int(state["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + WITHIN_S
        ready = first = None
        loaded: tuple[float, float] | None = None
        role = ROLES[service][1]
        while first is None or loaded is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{service}: no command applied within {WITHIN_S:.0f} s")
            page = await self.metrics(service)
            now = time.time() - killed_at
            if page is not None:
                ready = now if ready is None else ready
                if first is None and applied_by_role(page).get(role, 0) > 0:
                    first = now
            if loaded is None:
                lines = (self._log_dir / f"{service}.log").read_text().splitlines()[-400:]
                loaded = loaded_after(lines, killed_at)
            await asyncio.sleep(0.1)  # a poll interval
        after = await self.metrics(service) or ""
        return Handover(
            service=service,
            rss_before_mb=round(rss_mb(before), 1),
            rss_after_mb=round(rss_mb(after), 1),
            ready_s=round(ready or float("nan"), 2),
            tables_loaded_s=round(loaded[0] - killed_at, 2),
            table_load_s=loaded[1],
            first_applied_s=round(first, 2),
        )


async def run(log_dir: Path) -> tuple[int, list[Handover]]:
    async with httpx.AsyncClient(headers=auth_headers(), timeout=10) as client:
        bench = Bench(client, log_dir)
        stop = asyncio.Event()
        trickle = asyncio.create_task(bench.trickle(stop))
        try:
            known = entries(await bench.metrics("writer") or "")
            results = [await bench.handover(service) for service in ROLES]
        finally:
            stop.set()
            await trickle
        return known, results


def markdown(known: int, handovers: list[Handover]) -> str:
    lines = [
        f"Placement tables holding {known:,} customers: each consumer "
        f"SIGKILLed while {TRICKLE_PER_S} creates/s flow; seconds from the kill.",
        "",
        "| service | RSS before / after MB | ready | tables loaded (load itself) | first applied |",
        "| --- | --- | --- | --- | --- |",
    ]
    for h in handovers:
        lines.append(
            f"| {h.service} | {h.rss_before_mb:.0f} / {h.rss_after_mb:.0f} | {h.ready_s:.1f} "
            f"| {h.tables_loaded_s:.1f} ({h.table_load_s:.1f}) | {h.first_applied_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m regionstore_bench.handover [--label L]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="latest", help="results file: handover-<label>.*")
    parser.add_argument(
        "--log-dir", type=Path, default=Path(os.environ.get("RUN_DIR", ".run")) / "logs"
    )
    args = parser.parse_args()
    known, handovers = asyncio.run(run(args.log_dir))
    result = {"customers": known, "handovers": [asdict(h) for h in handovers]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"handover-{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"handover-{args.label}.md").write_text(markdown(known, handovers))
    print(markdown(known, handovers))


if __name__ == "__main__":
    main()
