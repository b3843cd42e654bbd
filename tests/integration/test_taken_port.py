"""A service started on a port another process holds says so and exits non-zero at once.

It starts the stack's own program with the stack's own settings and the port of the running
process of that kind, as a supervisor restarting it too early, or a second copy, would. Before
the fix a gateway there neither served nor exited, and ignored SIGTERM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regionstore_shared.listening import STARTUP_FAILURE
from tests.gateways import process_command, process_environment
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXIT_WITHIN_S = 60.0


@pytest.mark.parametrize("service", ["gateway", "writer"])
async def test_a_second_copy_on_a_taken_port_exits_with_the_startup_failure_status(
    stack: Stack, service: str, tmp_path: Path
) -> None:
    pid = await stack.pid(service)
    env = process_environment(pid)
    # The running copy's port, clock id aside: the second copy must not take the first's.
    env["REGIONSTORE_NODE_ID"] = "47"
    log = tmp_path / f"{service}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *process_command(pid), env=env, stdout=out, stderr=out
        )
    try:
        status = await asyncio.wait_for(process.wait(), EXIT_WITHIN_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    said = log.read_text(errors="replace")
    assert status == STARTUP_FAILURE, said[-2000:]
    port = env["REGIONSTORE_HTTP__PORT"]
    assert f"cannot listen on 127.0.0.1:{port}" in said, said[-2000:]
    # The running copy is unharmed.
    assert await stack.pid(service) == pid
