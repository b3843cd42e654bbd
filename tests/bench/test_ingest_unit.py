"""The single-ingest scenario's helpers: its key, stopping the consumers, the servers' CPU."""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from regionstore_bench.ingest import (
    ServerCpu,
    consumers_stopped,
    key_id,
    keys_command,
    keys_environment,
    set_consumers,
)
from regionstore_bench.report import _singles_cpu_lines


class TestKey:
    def test_the_id_is_the_part_between_the_prefix_and_the_secret(self) -> None:
        assert key_id("rsk_0a1b2c3d4e5f_se_cr-et") == "0a1b2c3d4e5f"

    def test_the_command_is_the_gateways_key_module_under_this_interpreter(self) -> None:
        command = keys_command("revoke", "0a1b2c3d4e5f")
        module = [sys.executable, "-m", "regionstore_gateway.keys"]
        assert command == [*module, "revoke", "0a1b2c3d4e5f"]

    def test_the_server_secret_comes_from_the_environment_first(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("REGIONSTORE_AUTH__SECRET", "from-the-environment")
        assert keys_environment(tmp_path)["REGIONSTORE_AUTH__SECRET"] == "from-the-environment"

    def test_else_from_the_stacks_secret_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.delenv("REGIONSTORE_AUTH__SECRET", raising=False)
        monkeypatch.setenv("REGIONSTORE_REDIS__URL", "redis://somewhere")
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "auth_secret").write_text("from-the-file\n")
        environment = keys_environment(tmp_path)
        assert environment["REGIONSTORE_AUTH__SECRET"] == "from-the-file"
        assert environment["REGIONSTORE_REDIS__URL"] == "redis://somewhere"


class FakeCompose:
    """process-compose's API over a dict of process states; a stop or start lands at once."""

    def __init__(self, names: list[str]) -> None:
        self.states = {name: {"status": "Running", "is_ready": "Ready"} for name in names}
        self.calls: list[str] = []
        self.stuck = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/processes":
            data = [{"name": name, **state} for name, state in self.states.items()]
            return httpx.Response(200, json={"data": data})
        self.calls.append(f"{request.method} {path}")
        name = path.rsplit("/", 1)[1]
        if not self.stuck:
            if path.startswith("/process/stop/"):
                self.states[name] = {"status": "Completed", "is_ready": "-"}
            else:
                self.states[name] = {"status": "Running", "is_ready": "Ready"}
        return httpx.Response(200, json={"name": name})

    def client(self, **_: object) -> httpx.AsyncClient:
        return CLIENT(base_url="http://compose", transport=httpx.MockTransport(self.handle))


# The client class itself, for the fake to use where the code under test finds it replaced.
CLIENT = httpx.AsyncClient


NAMES = ["gateway", "writer", "replicator", "writer_2", "replicator_2", "recovery", "kafka"]
CONSUMERS = ["writer", "replicator", "writer_2", "replicator_2"]


class TestConsumers:
    async def test_every_writer_and_replicator_is_stopped_and_nothing_else(self) -> None:
        compose = FakeCompose(NAMES)
        async with compose.client() as client:
            await set_consumers(client, running=False, timeout_s=5)
        assert compose.calls == [f"PATCH /process/stop/{name}" for name in CONSUMERS]
        stopped = {name for name, state in compose.states.items() if state["status"] != "Running"}
        assert stopped == set(CONSUMERS)

    async def test_they_are_started_again_even_when_the_body_fails(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        compose = FakeCompose(NAMES)
        monkeypatch.setattr(httpx, "AsyncClient", compose.client)
        seen: list[bool] = []

        async def failing_round() -> None:
            async with consumers_stopped("http://compose") as stopped:
                seen.append(stopped and compose.states["writer"]["status"] != "Running")
                raise RuntimeError("round failed")

        with pytest.raises(RuntimeError, match="round failed"):
            await failing_round()
        assert seen == [True]
        assert all(compose.states[name]["is_ready"] == "Ready" for name in CONSUMERS)
        assert compose.calls[-len(CONSUMERS) :] == [
            f"POST /process/start/{name}" for name in CONSUMERS
        ]

    async def test_a_consumer_that_does_not_stop_in_time_is_an_error(self) -> None:
        compose = FakeCompose(NAMES)
        compose.stuck = True
        async with compose.client() as client:
            with pytest.raises(TimeoutError, match="not stopped"):
                await set_consumers(client, running=False, timeout_s=0.3)

    async def test_without_process_compose_they_run_on(self) -> None:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with consumers_stopped(url) as stopped:
            assert stopped is False


@pytest.fixture
def listening() -> Iterator[str]:
    """A URL this very process listens at."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


class TestServerCpu:
    def test_the_cpu_of_the_listener_is_counted_per_request(self, listening: str) -> None:
        cpu = ServerCpu(listening)
        with cpu.round():
            spin_until = time.process_time() + 0.2
            while time.process_time() < spin_until:
                pass
        cpu.requests = 100
        # /proc counts user and system time apart, each in whole clock ticks (10 ms).
        assert cpu.seconds >= 0.2 - 0.03
        assert cpu.per_request_us() == pytest.approx(cpu.seconds / 100 * 1e6)

    def test_nothing_listening_or_no_requests_is_not_a_number(self, listening: str) -> None:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
        missing = ServerCpu(nobody)
        with missing.round():
            pass
        missing.requests = 10
        assert math.isnan(missing.per_request_us())
        assert math.isnan(ServerCpu(listening).per_request_us())


class TestReport:
    def single(self, stopped: float) -> dict[str, float]:
        return {
            "consumers_stopped_during_rounds": stopped,
            "cpu_us_per_accepted": 412.0,
            "bare_cpu_us_per_request": 190.0,
            "applied_s_after_rounds": 12.5,
            "applied_per_s_after_rounds": 1620.0,
        }

    def test_the_rows_say_what_the_rounds_cost_and_what_ran_beside_them(self) -> None:
        cpu, consumers = _singles_cpu_lines(self.single(1.0))
        assert "412 / 190 µs" in cpu
        assert "stopped during both sets of rounds" in consumers
        assert "12.5 s (1,620 customers/s)" in consumers
        (_, beside) = _singles_cpu_lines(self.single(0.0))
        assert "applying beside the rounds" in beside

    def test_older_results_have_no_such_rows(self) -> None:
        older = json.loads(json.dumps({"accepted_per_s": 779.0}))
        assert _singles_cpu_lines(older) == []
