"""Placement tables at size: what a consumer holds in memory, and how soon its partitions
apply again after it goes.

For the writer, then the replicator: read its resident memory (its own
``process_resident_memory_bytes``) and, while a trickle of creates keeps every partition busy,

- ``--how kill`` (the stack of ``make up``): SIGKILL it (process-compose starts it again) and
  time from the kill to ready, to its tables loaded (its log's "placement tables loaded", which
  also gives the load's own seconds), to its first applied command, and to every partition's
  committed offset moving again;
- ``--how stop`` (``make up SCALE=2``): stop it (it leaves its group, its partitions change hands
  to the other one, whose tables followed them) and time until every partition's committed
  offset moves again; then start it again.

``make bench-handover`` writes bench/results/handover-<label>.{json,md}.
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
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from regionstore_shared.api_key import auth_headers
from regionstore_shared.clients import kafka_admin
from regionstore_shared.ports import port, service_url
from regionstore_shared.settings import CommonSettings

from .env import compose_url
from .scaleout import CONSUMERS, RESULTS, applied_by_role

ROLES = {"writer": "home", "replicator": "replica"}
SETTINGS = CommonSettings()
GROUPS = {"writer": SETTINGS.kafka.writer_group, "replicator": SETTINGS.kafka.replicator_group}
_RSS = re.compile(r"^process_resident_memory_bytes (\S+)$", re.MULTILINE)
_ENTRIES = re.compile(r"^regionstore_placement_entries\{[^}]*\} (\S+)$", re.MULTILINE)
TRICKLE_PER_S = 40
WITHIN_S = 600.0
ZIPS = ((1310, "SP"), (45000, "BA"), (75000, "GO"))


@dataclass(frozen=True, slots=True)
class Handover:
    """One consumer's restart, seconds from its kill."""

    service: str
    how: str
    rss_before_mb: float
    rss_after_mb: float
    every_partition_s: float
    """Until the last of the group's partitions committed past where it stood at the kill."""
    ready_s: float = float("nan")
    tables_loaded_s: float = float("nan")
    table_load_s: float = float("nan")
    first_applied_s: float = float("nan")


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
    def __init__(
        self, client: httpx.AsyncClient, admin: AIOKafkaAdminClient, log_dir: Path
    ) -> None:
        self._client = client
        self._admin = admin
        self._log_dir = log_dir
        self._gateway = service_url(port("GATEWAY_PORT"))

    async def metrics(self, service: str) -> str | None:
        url = service_url(port(CONSUMERS[service]))
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

    async def committed(self, service: str) -> dict[int, int]:
        """The group's committed offset of every command partition."""
        offsets = await self._admin.list_consumer_group_offsets(GROUPS[service])
        topic = SETTINGS.kafka.command_topic
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    async def kill(self, service: str) -> Handover:
        before = await self.metrics(service)
        if before is None:
            raise SystemExit(f"{service} does not answer: is the stack up (make up)?")
        stood = await self.committed(service)
        state = (await self._client.get(f"{compose_url()}/process/{service}")).json()
        log_file = self._log_dir / f"{service}.log"
        logged = log_file.stat().st_size if log_file.exists() else 0
        killed_at = time.time()
        os.kill(int(state["pid"]), signal.SIGKILL)
        ready = first = None
        loaded: tuple[float, float] | None = None
        moved: dict[int, float] = {}
        role = ROLES[service]
        while first is None or loaded is None or len(moved) < len(stood):
            now = self._within(killed_at)
            page = await self.metrics(service)
            if page is not None:
                ready = now if ready is None else ready
                if first is None and applied_by_role(page).get(role, 0) > 0:
                    first = now
            if loaded is None:
                loaded = loaded_after(_since(log_file, logged), killed_at)
            await self._moved(service, stood, moved, now)
            await asyncio.sleep(0.1)  # a poll interval
        after = await self.metrics(service) or ""
        return Handover(
            service=service,
            how="kill",
            rss_before_mb=round(rss_mb(before), 1),
            rss_after_mb=round(rss_mb(after), 1),
            every_partition_s=round(max(moved.values()), 2),
            ready_s=round(ready or float("nan"), 2),
            tables_loaded_s=round(loaded[0] - killed_at, 2),
            table_load_s=loaded[1],
            first_applied_s=round(first, 2),
        )

    async def stop(self, service: str) -> Handover:
        before = await self.metrics(service)
        if before is None:
            raise SystemExit(f"{service} does not answer: is the stack up (make up SCALE=2)?")
        peer = f"{service}_2"
        if (await self._client.get(f"{compose_url()}/process/{peer}")).status_code != 200:
            raise SystemExit("--how stop needs the scaled stack: make up SCALE=2")
        stood = await self.committed(service)
        stopped_at = time.time()
        await self._client.patch(f"{compose_url()}/process/stop/{service}")
        moved: dict[int, float] = {}
        while len(moved) < len(stood):
            await self._moved(service, stood, moved, self._within(stopped_at))
            await asyncio.sleep(0.1)  # a poll interval
        after = await self.metrics(peer) or ""
        await self._client.post(f"{compose_url()}/process/start/{service}")
        return Handover(
            service=service,
            how="stop",
            rss_before_mb=round(rss_mb(before), 1),
            rss_after_mb=round(rss_mb(after), 1),
            every_partition_s=round(max(moved.values()), 2),
        )

    async def _moved(
        self, service: str, stood: dict[int, int], moved: dict[int, float], now: float
    ) -> None:
        with contextlib.suppress(KafkaError, OSError):  # busy with the rebalance: poll again
            for partition, offset in (await self.committed(service)).items():
                if partition not in moved and offset > stood.get(partition, -1):
                    moved[partition] = now

    @staticmethod
    def _within(since: float) -> float:
        now = time.time() - since
        if now > WITHIN_S:
            raise SystemExit(f"the partitions did not all move again within {WITHIN_S:.0f} s")
        return now


def _since(log_file: Path, offset: int) -> list[str]:
    """The lines a log gained past ``offset`` (all of it if it was started again, shorter)."""
    with log_file.open("rb") as log:
        log.seek(offset if log_file.stat().st_size >= offset else 0)
        return log.read().decode(errors="replace").splitlines()


async def run(log_dir: Path, how: str) -> tuple[int, list[Handover]]:
    admin = kafka_admin(SETTINGS.kafka, "bench-handover")
    await admin.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(admin.close)
        client = await stack.enter_async_context(
            httpx.AsyncClient(headers=auth_headers(), timeout=10)
        )
        bench = Bench(client, admin, log_dir)
        stop = asyncio.Event()
        trickle = asyncio.create_task(bench.trickle(stop))
        try:
            # Each writer counts the partitions it owns (both, on a SCALE=2 stack).
            pages = [await bench.metrics(name) for name in ("writer", "writer_2")]
            known = sum(entries(page or "") for page in pages)
            act = bench.kill if how == "kill" else bench.stop
            results = [await act(service) for service in ROLES]
        finally:
            stop.set()
            await trickle
        return known, results


def markdown(known: int, handovers: list[Handover]) -> str:
    lines = [
        f"Placement tables holding {known:,} customers, {TRICKLE_PER_S} creates/s flowing; "
        "seconds from the kill (SIGKILL, restarted by process-compose) or the stop (its "
        "partitions change hands to the other consumer of a SCALE=2 stack).",
        "",
        "| service | how | RSS before / after MB | ready | tables loaded (load itself) "
        "| first applied | every partition committing again |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for h in handovers:
        lines.append(
            f"| {h.service} | {h.how} | {h.rss_before_mb:.0f} / {h.rss_after_mb:.0f} "
            f"| {h.ready_s:.1f} | {h.tables_loaded_s:.1f} ({h.table_load_s:.1f}) "
            f"| {h.first_applied_s:.1f} | {h.every_partition_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m regionstore_bench.handover [--label L]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="latest", help="results file: handover-<label>.*")
    parser.add_argument("--how", choices=("kill", "stop"), default="kill")
    parser.add_argument(
        "--log-dir", type=Path, default=Path(os.environ.get("RUN_DIR", ".run")) / "logs"
    )
    args = parser.parse_args()
    known, handovers = asyncio.run(run(args.log_dir, args.how))
    result = {"customers": known, "handovers": [asdict(h) for h in handovers]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"handover-{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"handover-{args.label}.md").write_text(markdown(known, handovers))
    print(markdown(known, handovers))


if __name__ == "__main__":
    main()
