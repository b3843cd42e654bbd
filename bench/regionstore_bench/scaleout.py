"""Scale-out: how fast one writer (and replicator) drains a backlog, and how fast two do.

Runs on the stack of ``make up SCALE=2``. Each phase stops every writer and replicator, ingests
the same number of new customers through the balancer (so the backlog is waiting in Kafka), then
starts one, or both, of each and times the applies from the first one seen to the last, read
from the consumers' own ``regionstore_commands_applied_total``. The writers and the replicators
run together first, then the writers alone (what a writer does when the replicators are not
competing for the machine). ``make bench-scale`` writes bench/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from regionstore_shared.api_key import auth_headers
from regionstore_shared.ports import port, service_url
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap

from .data import target_counts
from .env import compose_url

log = logging.getLogger("regionstore_bench")


def _customer() -> dict[str, object]:
    return {
        "customer_id": f"bench-scale-{uuid.uuid4().hex}",
        "customer_unique_id": uuid.uuid4().hex,
        "customer_zip_code_prefix": 1310,
        "customer_city": "sao paulo",
        "customer_state": "SP",
    }


RESULTS = Path(__file__).resolve().parents[1] / "results"
CONSUMERS = {
    "writer": "WRITER_PORT",
    "writer_2": "WRITER_2_PORT",
    "replicator": "REPLICATOR_PORT",
    "replicator_2": "REPLICATOR_2_PORT",
}
# Applies per new customer, as the placement tables route it (the writer the home region, the
# replicator the replica: a new customer lived nowhere, so no tombstone).
PER_COMMAND = {
    role: float(count)
    for role, count in target_counts([_customer()], RegionMap(DEFAULT_REGIONS))[1].items()
}
BATCH = 1000
_APPLIED = re.compile(
    r'^regionstore_commands_applied_total\{region="[^"]*",role="([a-z]+)"\} (\S+)$', re.MULTILINE
)


def applied_by_role(metrics: str) -> dict[str, float]:
    """Total applies per role (``home``, ``replica``) in one service's metrics page."""
    totals = dict.fromkeys(PER_COMMAND, 0.0)
    for role, value in _APPLIED.findall(metrics):
        if role in totals:
            totals[role] += float(value)
    return totals


@dataclass(frozen=True, slots=True)
class Drain:
    """When the first and the last apply of a role were seen, and how many came between."""

    started: float
    finished: float
    applies: float

    @property
    def per_s(self) -> float:
        """Applies per second from the first to the last."""
        return self.applies / max(self.finished - self.started, 1e-9)


def ratio(two: float, one: float) -> float:
    """How many times one's rate two reach."""
    return round(two / one, 2) if one else 0.0


class ScaleBench:
    """Stops, starts and reads the consumers of a SCALE=2 stack through process-compose."""

    def __init__(self, client: httpx.AsyncClient, gateway: str, compose: str) -> None:
        self._client = client
        self._gateway = gateway
        self._compose = compose

    async def check_scaled(self) -> None:
        """Fail with what to run when the stack has only one of each."""
        answer = await self._client.get(f"{self._compose}/process/writer_2")
        if answer.status_code != 200:
            raise SystemExit("bench-scale needs the scaled stack: make down && make up SCALE=2")

    async def applied(self, names: list[str]) -> dict[str, float]:
        totals = dict.fromkeys(PER_COMMAND, 0.0)
        for name in names:
            url = service_url(port(CONSUMERS[name]))
            page = await self._client.get(f"{url}/metrics")
            for role, value in applied_by_role(page.text).items():
                totals[role] += value
        return totals

    async def _status(self, name: str) -> dict[str, object]:
        answer = await self._client.get(f"{self._compose}/process/{name}")
        return dict(answer.json())

    async def _until(self, name: str, done: Callable[[dict[str, object]], bool]) -> None:
        """Poll process-compose until ``name``'s state passes ``done``."""
        while True:
            if done(await self._status(name)):
                return
            await asyncio.sleep(0.2)

    async def stop(self, names: list[str]) -> None:
        for name in names:
            await self._client.patch(f"{self._compose}/process/stop/{name}")
        for name in names:
            await self._until(name, lambda status: status["status"] != "Running")

    async def start(self, names: list[str]) -> None:
        for name in names:
            await self._client.post(f"{self._compose}/process/start/{name}")
        for name in names:
            await self._until(name, lambda status: status.get("is_ready") == "Ready")

    async def ingest(self, count: int) -> None:
        """``count`` new customers through the balancer, four batches at a time."""
        limit = asyncio.Semaphore(4)

        async def post(size: int) -> None:
            items = [{"customer": _customer()} for _ in range(size)]
            async with limit:
                answer = await self._client.post(
                    f"{self._gateway}/v1/customers:batch", json={"items": items}, timeout=120
                )
            if answer.status_code != 202 or answer.json()["accepted"] != size:
                raise SystemExit(f"ingest refused: {answer.status_code} {answer.text[:300]}")

        await asyncio.gather(*(post(min(BATCH, count - i)) for i in range(0, count, BATCH)))

    async def phase(self, names: list[str], count: int) -> dict[str, Drain]:
        """Drain ``count`` commands' backlog with the consumers ``names``."""
        await self.stop(list(CONSUMERS))
        await self.ingest(count)
        roles = {"home" if name.startswith("writer") else "replica" for name in names}
        await self.start(names)
        first: dict[str, tuple[float, float]] = {}
        drains: dict[str, Drain] = {}
        while len(drains) < len(roles):
            totals, now = await self.applied(names), time.perf_counter()
            for role in roles - drains.keys():
                if totals[role] > 0 and role not in first:
                    first[role] = (now, totals[role])
                if role in first and totals[role] >= count * PER_COMMAND[role]:
                    drains[role] = Drain(first[role][0], now, totals[role] - first[role][1])
            await asyncio.sleep(0.1)
        log.info("drained with %s: %s", names, {r: round(d.per_s) for r, d in drains.items()})
        return drains


async def run(count: int, gateway: str) -> dict[str, float]:
    """Both comparisons; every consumer is left running."""
    async with httpx.AsyncClient(headers=auth_headers(), timeout=10) as client:
        bench = ScaleBench(client, gateway, compose_url())
        await bench.check_scaled()
        try:
            one = await bench.phase(["writer", "replicator"], count)
            two = await bench.phase(list(CONSUMERS), count)
            # Last: the replicators' share of these waits until they are started at the end.
            one_w = await bench.phase(["writer"], count)
            two_w = await bench.phase(["writer", "writer_2"], count)
        finally:
            await bench.start(list(CONSUMERS))
    return {
        "commands_per_phase": float(count),
        "writers_alone_1_per_s": one_w["home"].per_s,
        "writers_alone_2_per_s": two_w["home"].per_s,
        "writers_alone_ratio": ratio(two_w["home"].per_s, one_w["home"].per_s),
        "writer_1_per_s": one["home"].per_s,
        "writer_2_per_s": two["home"].per_s,
        "writer_ratio": ratio(two["home"].per_s, one["home"].per_s),
        "replicator_1_per_s": one["replica"].per_s,
        "replicator_2_per_s": two["replica"].per_s,
        "replicator_ratio": ratio(two["replica"].per_s, one["replica"].per_s),
    }


def markdown(results: dict[str, float]) -> str:
    """The results as the table bench/results/scale.md holds."""
    rows = [
        ("writers alone", "writers_alone"),
        ("writers, replicators running", "writer"),
        ("replicators, writers running", "replicator"),
    ]
    lines = [
        f"Backlog of {results['commands_per_phase']:.0f} commands per phase; applies/s.",
        "",
        "| Consumers | one | two | two / one |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {results[f'{key}_1_per_s']:.0f} | {results[f'{key}_2_per_s']:.0f} "
            f"| {results[f'{key}_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m regionstore_bench.scaleout [--commands N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=30_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    gateway = service_url(port("BALANCER_PORT"))
    results = asyncio.run(run(args.commands, gateway))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
