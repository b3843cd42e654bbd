"""The wipe's steps, on a stand-in for process-compose and the gateway: no stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos import wipe
from tests.stack import Endpoints, Stack


class Processes(Stack):
    """process-compose as the wipe sees it: what was done, in order, and what the data
    directory held at each step."""

    def __init__(self, names: list[str], data: Path) -> None:
        super().__init__(Endpoints("", "", {}, {}), api_url="http://process-compose.invalid")
        self.names = names
        self.data = data
        self.done: list[tuple[str, str, bool]] = []

    async def processes(self) -> dict[str, dict[str, Any]]:
        return {name: {"status": "Running"} for name in self.names}

    async def stop(self, process: str) -> None:
        self.done.append(("stop", process, self.data.exists()))

    async def start(self, process: str, *, wait: bool = True) -> int | None:
        self.done.append(("start", process, self.data.exists()))
        return None

    async def wait_ready(
        self, process: str, *, not_pid: int | None = None, within_s: float = 0.0
    ) -> int:
        self.done.append(("ready", process, self.data.exists()))
        return 1


def _gateway(statuses: list[str]) -> httpx.AsyncClient:
    """A gateway whose /v1/regions says region_2 is each of ``statuses`` in turn, then the last."""
    said = iter(statuses)

    def regions(_: httpx.Request) -> httpx.Response:
        status = next(said, statuses[-1])
        return httpx.Response(200, json={"regions": [{"name": "region_2", "status": status}]})

    return httpx.AsyncClient(transport=httpx.MockTransport(regions), base_url="http://gateway")


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    return tmp_path


async def test_a_wipe_stops_both_deletes_the_data_starts_postgres_first_and_waits(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wipe, "WATCH_EVERY_S", 0.0)
    data = run_dir / "stores" / "region_2" / "pg"
    (data / "base").mkdir(parents=True)
    (data / "PG_VERSION").write_text("18\n")
    stack = Processes(["region_2", "region_2_pg", "region_1"], data)
    async with _gateway(["down", "down", "available"]) as http:
        note = await wipe.wipe(stack, http, "region_2")
    assert stack.done == [
        ("stop", "region_2", True),
        ("stop", "region_2_pg", True),
        ("start", "region_2_pg", False),
        ("ready", "region_2_pg", False),
        ("start", "region_2", False),
        ("ready", "region_2", False),
    ]
    assert not data.exists()
    assert (run_dir / "stores" / "region_2").exists()
    assert note.startswith("region_2 empty and ready after ")
    assert note.endswith(", was down")


async def test_a_mongod_region_loses_its_whole_directory(run_dir: Path) -> None:
    data = run_dir / "stores" / "region_2"
    (data / "journal").mkdir(parents=True)
    stack = Processes(["region_2", "region_1"], data)
    async with _gateway(["available"]) as http:
        note = await wipe.wipe(stack, http, "region_2")
    assert [(step, name) for step, name, _ in stack.done] == [
        ("stop", "region_2"),
        ("start", "region_2"),
        ("ready", "region_2"),
    ]
    assert not data.exists()
    assert "was" not in note


async def test_a_region_that_never_comes_back_fails_the_wipe(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wipe, "BACK_WITHIN_S", 0.0)
    data = run_dir / "stores" / "region_2" / "pg"
    data.mkdir(parents=True)
    stack = Processes(["region_2", "region_2_pg"], data)
    async with _gateway(["down"]) as http:
        with pytest.raises(wipe.WipeError, match="region_2 is down"):
            await wipe.wipe(stack, http, "region_2")
