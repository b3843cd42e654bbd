"""More gateways (and a writer) beside the stack's own, each with its clock offset by libfaketime.

A real deployment runs several gateways whose clocks differ, and consumers whose clocks differ
from theirs. These start the stack's gateway (or writer) program again, with its own settings
(read from its environment), another port (and clock id, or placement-table directory), and
``FAKETIME`` set: Debian's libfaketime shifts its wall clock (the clock the versions come from)
while its monotonic clock stays true, as NTP leaves a host's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from regionstore_testing.processes import stop, wait_serving
from tests.stack import Stack, StackError

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
READY_WITHIN_S = 60.0
STOP_WITHIN_S = 15.0


@dataclass(frozen=True, slots=True)
class Skew:
    """A gateway's clock offset, as ``FAKETIME`` spells it ("-0.03": 30 ms behind; "+1d")."""

    faketime: str
    label: str

    @property
    def none(self) -> bool:
        return self.faketime in ("", "0", "+0", "-0")


SKEWS = {
    "0": Skew("0", "not offset"),
    "-5ms": Skew("-0.005", "5 ms behind"),
    "-30ms": Skew("-0.03", "30 ms behind"),
    "-50ms": Skew("-0.05", "50 ms behind"),
    "-10s": Skew("-10", "10 s behind"),
    "-1d": Skew("-1d", "a day behind"),
    "+1d": Skew("+1d", "a day ahead"),
}
"""The offsets the tests and ``make chaos`` use, by name."""


def skew(name: str) -> Skew:
    """A known offset by name, or any ``FAKETIME`` offset given as it is."""
    return SKEWS.get(name) or Skew(name, f"offset {name}")


def process_environment(pid: int) -> dict[str, str]:
    """The environment a process runs with (the stack gateway's: its settings included)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)
    return dict(pairs)


def process_command(pid: int) -> list[str]:
    """A process's command line (the stack gateway's: its Python and module)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def faking(offset: Skew, clock_file: Path | None = None) -> dict[str, str]:
    """The variables that offset a process's wall clock by ``offset`` (or by what
    ``clock_file`` says at each reading: the offset can then be stepped while it runs), and not
    its monotonic clock; raises StackError when libfaketime is missing."""
    if offset.none and clock_file is None:
        return {}
    if not LIBFAKETIME.exists():
        raise StackError(f"{LIBFAKETIME} is missing: apt-get install faketime")
    held = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    if clock_file is not None:
        return held | {"FAKETIME_TIMESTAMP_FILE": str(clock_file), "FAKETIME_NO_CACHE": "1"}
    return held | {"FAKETIME": offset.faketime}


@contextlib.asynccontextmanager
async def extra_gateway(
    stack: Stack,
    *,
    port: int,
    node_id: int,
    offset: Skew,
    log: Path,
    clock_file: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[str]:
    """Run one more gateway, ready, for the block; its base URL is yielded. With
    ``clock_file``, its clock's offset is what the file says (``FAKETIME`` syntax) when read;
    ``settings`` (``REGIONSTORE_*`` variables) change its own from the stack gateway's."""
    gateway = extra_gateway_process(
        stack,
        port=port,
        node_id=node_id,
        offset=offset,
        log=log,
        clock_file=clock_file,
        settings=settings,
    )
    async with gateway as (url, _):
        yield url


@contextlib.asynccontextmanager
async def extra_gateway_process(
    stack: Stack,
    *,
    port: int,
    node_id: int,
    offset: Skew,
    log: Path,
    clock_file: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """As :func:`extra_gateway`, yielding its pid too (to pause it)."""
    own = {"REGIONSTORE_HTTP__PORT": str(port), "REGIONSTORE_NODE_ID": str(node_id)}
    process = _extra_process(
        stack, "gateway", {**(settings or {}), **own}, port, offset, log, clock_file
    )
    async with process as running:
        yield running


@contextlib.asynccontextmanager
async def extra_consumer_process(
    stack: Stack, service: str, *, port: int, state_dir: Path, log: Path, clock_file: Path
) -> AsyncIterator[tuple[str, int]]:
    """One more ``service`` (the writer or the replicator), in its group beside the stack's (as
    ``make up SCALE=2``'s second), with its own placement tables in ``state_dir`` and its wall
    clock's offset read from ``clock_file``; its base URL and pid are yielded once it is ready."""
    settings = {"REGIONSTORE_HTTP__PORT": str(port), "REGIONSTORE_STATE_DIR": str(state_dir)}
    process = _extra_process(stack, service, settings, port, skew("0"), log, clock_file)
    async with process as running:
        yield running


@contextlib.asynccontextmanager
async def _extra_process(
    stack: Stack,
    service: str,
    settings: dict[str, str],
    port: int,
    offset: Skew,
    log: Path,
    clock_file: Path | None,
) -> AsyncIterator[tuple[str, int]]:
    """The stack's ``service`` program again, with its environment but ``settings`` and a
    faked clock; ready for the block."""
    pid = await stack.pid(service)
    env = process_environment(pid) | faking(offset, clock_file) | settings
    out = _open_log(log)
    try:
        process = await asyncio.create_subprocess_exec(
            *process_command(pid), env=env, stdout=out, stderr=out
        )
    finally:
        out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_serving(url, process, within_s=READY_WITHIN_S, why=lambda: _tail(log))
        yield url, process.pid
    finally:
        await stop([process], within_s=STOP_WITHIN_S)


def _open_log(log: Path) -> BinaryIO:
    log.parent.mkdir(parents=True, exist_ok=True)
    return log.open("ab")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
