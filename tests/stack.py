"""The local stack as tests see it: its endpoints, and control of its processes.

Endpoints come from the variables the services read (``REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS``,
``REGIONSTORE_REDIS__URL``, ``REGIONSTORE_STORES__<REGION>``) plus ``REGIONSTORE_<SERVICE>_URL``
for the services' HTTP ports, so the same tests can run against another deployment
(``REGIONSTORE_STACK=external``). Processes (kafka, redis, redis_idempotency, region_1..,
gateway, writer, replicator, recovery) are driven through process-compose's REST API on
``PC_PORT``.

Every process restarts by itself after a crash (``kill``); ``stop`` keeps it down until
``start``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from regionstore_shared.ports import (
    kafka_bootstrap,
    local_service_urls,
    port,
    redis_url,
    service_url,
    store_uris,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESS_COMPOSE_URL = service_url(port("PC_PORT"))
EXTERNAL = os.environ.get("REGIONSTORE_STACK") == "external"
READY_WITHIN_S = 120.0
STOPPED_WITHIN_S = 90.0
POLL_S = 0.2
STORE_PREFIX = "REGIONSTORE_STORES__"


class StackError(AssertionError):
    """A process of the stack did not reach the state a test waited for."""


@dataclass(frozen=True)
class Endpoints:
    """Where the infrastructure and the services answer."""

    kafka_bootstrap: str
    redis_url: str
    stores: dict[str, str]
    services: dict[str, str]

    @classmethod
    def from_env(cls) -> Endpoints:
        env = os.environ
        stores = {
            name.removeprefix(STORE_PREFIX).lower(): uri
            for name, uri in env.items()
            if name.startswith(STORE_PREFIX)
        }
        return cls(
            kafka_bootstrap=env.get("REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS")
            or kafka_bootstrap(port("KAFKA_PORT")),
            redis_url=env.get("REGIONSTORE_REDIS__URL") or redis_url(port("REDIS_PORT")),
            stores=dict(sorted((stores or store_uris()).items())),
            services=local_service_urls(),
        )


class Stack:
    """The running stack: endpoints, and stop/start/kill/wait of its processes."""

    def __init__(self, endpoints: Endpoints, api_url: str = PROCESS_COMPOSE_URL) -> None:
        self.endpoints = endpoints
        self.api_url = api_url

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway's HTTP API."""
        return self.endpoints.services["gateway"]

    def api_answers(self) -> bool:
        """Whether a process-compose server answers (sync: usable outside the event loop)."""
        try:
            httpx.get(f"{self.api_url}/live", timeout=2).raise_for_status()
        except httpx.HTTPError:
            return False
        return True

    async def processes(self) -> dict[str, dict[str, Any]]:
        """process-compose's state of every process, by name."""
        data = await self._call("GET", "/processes")
        return {proc["name"]: proc for proc in data["data"]}

    async def state(self, process: str) -> dict[str, Any]:
        """process-compose's state of one process (status, is_ready, pid, restarts, ...)."""
        result: dict[str, Any] = await self._call("GET", f"/process/{process}")
        return result

    async def pid(self, process: str) -> int:
        """The pid of a running process (the real server: the start scripts exec it)."""
        state = await self.state(process)
        if not state["pid"] or state["status"] != "Running":
            raise StackError(f"{process} is not running: {state['status']}")
        return int(state["pid"])

    async def stop(self, process: str) -> None:
        """Stop a process (SIGTERM) and wait until it is gone; it stays down until ``start``."""
        pid = await self.pid(process)
        await self._call("PATCH", f"/process/stop/{process}")
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while alive(pid) or (await self.state(process))["status"] == "Running":
            if time.monotonic() > deadline:
                raise StackError(
                    f"{process} (pid {pid}) still running {STOPPED_WITHIN_S}s after stop"
                )
            await asyncio.sleep(POLL_S)

    async def start(self, process: str, *, wait: bool = True) -> int | None:
        """Start a stopped process; by default wait until it is ready and return its pid."""
        await self._call("POST", f"/process/start/{process}")
        return await self.wait_ready(process) if wait else None

    async def kill(self, process: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send a signal to a process and return the pid it had.

        After SIGKILL, ``wait_ready(process, not_pid=<returned pid>)`` waits for the restart.
        """
        pid = await self.pid(process)
        os.kill(pid, sig)
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while sig == signal.SIGKILL and alive(pid):
            if time.monotonic() > deadline:
                raise StackError(f"{process} (pid {pid}) survived SIGKILL")
            await asyncio.sleep(POLL_S / 10)
        return pid

    async def wait_ready(
        self, process: str, *, not_pid: int | None = None, within_s: float = READY_WITHIN_S
    ) -> int:
        """Wait until a process runs and passes its readiness probe; return its pid.

        With ``not_pid``, a process still running under that pid does not count (a restart
        is awaited).
        """
        deadline = time.monotonic() + within_s
        while True:
            state = await self.state(process)
            if _is_ready(state) and state["pid"] != not_pid:
                return int(state["pid"])
            if time.monotonic() > deadline:
                logs = await self.log_tail(process)
                raise StackError(f"{process} not ready after {within_s}s: {state}\n{logs}")
            await asyncio.sleep(POLL_S)

    async def log_tail(self, process: str, lines: int = 30) -> str:
        """The last lines process-compose kept of a process's output."""
        data = await self._call("GET", f"/process/logs/{process}/0/{lines}")
        return "\n".join(data.get("logs") or [])

    async def _call(self, method: str, path: str) -> Any:
        if EXTERNAL:
            pytest.skip("needs the local process-compose stack (REGIONSTORE_STACK=external)")
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            response = await client.request(method, path)
        if response.is_error:
            raise StackError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()


def _is_ready(state: dict[str, Any]) -> bool:
    if state["status"] != "Running":
        return False
    return not state["has_ready_probe"] or state["is_ready"] == "Ready"


def alive(pid: int) -> bool:
    # A zombie counts as gone: it no longer serves anything, only awaits its parent's reaping.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
