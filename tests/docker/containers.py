"""The compose deployment as the chaos round sees a stack: its processes are containers.

Each process name of the local stack maps to a compose service (a broker for ``kafka``, the
region's store for ``region_N``). ``kill`` is ``docker kill`` (SIGKILL); Docker then counts the
container as stopped by hand, so its restart policy leaves it down and ``wait_ready`` starts it
again, as an operator or an orchestrator would, and waits for its healthcheck to pass.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

from tests.stack import READY_WITHIN_S, Endpoints, Stack, StackError

PROJECT = "regionstore"
POLL_S = 0.5
SERVICES = {
    "gateway": "gateway",
    "writer": "writer",
    "replicator": "replicator",
    "recovery": "recovery",
    "kafka": "kafka-2",
    "redis": "redis",
    "redis_idempotency": "redis-idempotency",
    "region_1": "mongo-r1a",
    "region_2": "mongo-r2a",
    "region_3": "mongo-r3a",
}


async def docker(*arguments: str) -> str:
    """Run the docker CLI; its output, or StackError with what it said."""
    process = await asyncio.create_subprocess_exec(
        "docker",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode:
        raise StackError(f"docker {' '.join(arguments)}: {err.decode().strip()}")
    return out.decode()


async def container(process: str) -> str:
    """The id of the container of a process's compose service."""
    service = SERVICES[process]
    ids = (
        await docker(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        )
    ).split()
    if len(ids) != 1:
        raise StackError(f"expected one container of {service}, found {ids}")
    return ids[0]


async def inspect(process: str) -> dict[str, Any]:
    """``docker inspect``'s State of the process's container."""
    state: dict[str, Any] = json.loads(
        await docker("inspect", "-f", "{{json .State}}", await container(process))
    )
    return state


def as_process(state: dict[str, Any]) -> dict[str, Any]:
    """A container's State in process-compose's shape, as the chaos round reads a process's:
    running or not, its pid, and its healthcheck as the readiness probe."""
    health = state.get("Health")
    healthy = health is not None and health["Status"] == "healthy"
    running = state["Running"] and not state["Restarting"]
    return {
        "status": "Running" if running else str(state["Status"]).capitalize(),
        "pid": int(state["Pid"]),
        "has_ready_probe": health is not None,
        "is_ready": "Ready" if healthy else "Not Ready",
    }


class ContainerStack(Stack):
    """The compose deployment: endpoints from the environment, processes as containers.

    ``stores`` narrows the regions' stores the round sees (and so kills) to those named; the
    others keep running untouched.
    """

    def __init__(self, stores: tuple[str, ...] | None = None) -> None:
        super().__init__(Endpoints.from_env())
        self._seen = tuple(
            process
            for process in SERVICES
            if stores is None or not process.startswith("region_") or process in stores
        )

    async def processes(self) -> dict[str, dict[str, Any]]:
        return {process: as_process(await inspect(process)) for process in self._seen}

    async def pid(self, process: str) -> int:
        state = await inspect(process)
        if not state["Running"]:
            raise StackError(f"{process} is not running: {state['Status']}")
        return int(state["Pid"])

    async def kill(self, process: str, sig: signal.Signals = signal.SIGKILL) -> int:
        pid = await self.pid(process)
        await docker("kill", "--signal", sig.name, await container(process))
        return pid

    async def wait_ready(
        self, process: str, *, not_pid: int | None = None, within_s: float = READY_WITHIN_S
    ) -> int:
        deadline = time.monotonic() + within_s
        while True:
            state = await inspect(process)
            if not state["Running"] and not state["Restarting"]:
                await docker("start", await container(process))
            elif state["Pid"] != not_pid and state.get("Health", {}).get("Status") == "healthy":
                return int(state["Pid"])
            if time.monotonic() > deadline:
                logs = await self.log_tail(process)
                raise StackError(f"{process} not healthy after {within_s}s: {state}\n{logs}")
            await asyncio.sleep(POLL_S)

    async def log_tail(self, process: str, lines: int = 30) -> str:
        return await docker("logs", "--tail", str(lines), await container(process))
