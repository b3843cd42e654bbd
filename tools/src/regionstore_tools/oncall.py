"""The on-call commands: what is parked for a region, the audit trail, and the API keys.

They read Kafka and the gateway's Redis directly, with the services' settings
(``REGIONSTORE_KAFKA__*``, ``REGIONSTORE_REDIS__*``, ``REGIONSTORE_AUTH__SECRET``): they answer
when the gateway itself does not. ``register`` adds them to the ``regionstore`` app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from regionstore_gateway.auth.apikeys import KeyRecord
from regionstore_gateway.auth.roles import Role
from regionstore_gateway.keys import describe
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.parked import ParkedBacklog
from regionstore_shared.settings import CommonSettings
from regionstore_tools import audit_log, pending_view
from regionstore_tools.gateway import ToolError
from regionstore_tools.reporting import reported
from regionstore_tools.sources import AuditSource, KeyTools, Sources, sources

T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]

keys_app = typer.Typer(
    help="Create, list and revoke the gateway's API keys (reads its Redis directly).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``pending``, ``audit-log`` and ``keys`` to the command line."""
    app.command("pending")(pending)
    app.command("audit-log")(audit_log_command)
    app.add_typer(keys_app, name="keys")


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


def pending(
    ctx: typer.Context,
    region: Annotated[str, typer.Argument(help="Region name, e.g. region_2.")],
    sample: Annotated[
        int, typer.Option("--sample", min=0, max=1000, help="How many of the oldest to list.")
    ] = 10,
    as_json: AsJson = False,
) -> None:
    """What is parked for a region: count, oldest age, the oldest commands' customers.

    Read from Kafka (REGIONSTORE_KAFKA__*), from where the region's recovery group stands.
    """
    with reported():
        settings = CommonSettings()
        names = settings.region_map.names
        if region not in names:
            raise ToolError(f"no region {region!r}: the regions are {', '.join(names)}", 2)
        backlog = asyncio.run(_read_parked(sources(ctx), settings, region, sample))
        now_ms = int(time.time() * 1000)
        if as_json:
            _print_json(pending_view.as_json(backlog, now_ms))
        else:
            Console(soft_wrap=False).print(pending_view.render(backlog, now_ms))


async def _read_parked(
    opened: Sources, settings: CommonSettings, region: str, sample: int
) -> ParkedBacklog:
    async with opened.parked(settings.kafka) as reader:
        return await reader.read(region, sample=sample)


def audit_log_command(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print events as they come, until Ctrl-C.")
    ] = False,
    region: Annotated[
        str | None, typer.Option("--region", help="Only this region's status changes.")
    ] = None,
    since: Annotated[
        str, typer.Option("--since", help="From this long ago (30m, 2h, 7d) or this time.")
    ] = "24h",
    last: Annotated[
        int, typer.Option("--last", min=1, help="At most this many of the newest actions.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit trail: status changes and deletes, who asked, and the outcome.

    Each action is shown done, failed or unknown: the gateway records an action before taking
    it, and a follow-up when it failed or its outcome is unknown. Read from Kafka
    (REGIONSTORE_KAFKA__*).
    """
    with reported():
        start = audit_log.parse_since(since, datetime.now(UTC))
        settings = CommonSettings()
        try:
            asyncio.run(_audit_log(sources(ctx), settings, start, region, last, follow, as_json))
        except KeyboardInterrupt:
            return


async def _audit_log(
    opened: Sources,
    settings: CommonSettings,
    since: datetime,
    region: str | None,
    last: int,
    follow: bool,
    as_json: bool,
) -> None:
    async with opened.audit(settings.kafka) as reader:
        events = await reader.history(since)
        for entry in audit_log.fold(e for e in events if audit_log.matches(e, region))[-last:]:
            typer.echo(
                json.dumps(entry.as_json(), ensure_ascii=False)
                if as_json
                else audit_log.entry_line(entry)
            )
        if follow:
            await _follow(reader, region, as_json)


async def _follow(reader: AuditSource, region: str | None, as_json: bool) -> None:
    # Ctrl-C (or a TERM) ends the follow between two reads, not by cancelling one: a Kafka read
    # cancelled at the wrong moment may swallow the cancellation and follow on forever.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            await _print_next(reader, region, as_json)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _print_next(reader: AuditSource, region: str | None, as_json: bool) -> None:
    """The events of one read (at most a second's wait), those of ``region`` printed."""
    for event in await reader.next_events():
        if not audit_log.matches(event, region):
            continue
        typer.echo(
            json.dumps(event.model_dump(mode="json", exclude_none=True), ensure_ascii=False)
            if as_json
            else audit_log.live_line(event)
        )


def _key_json(record: KeyRecord) -> dict[str, Any]:
    """A key record as it may be shown: never its digest."""
    return {
        "key_id": record.key_id,
        "role": record.role.value,
        "name": record.name,
        "created_at": record.created_at,
        "rate": record.rate,
        "burst": record.burst,
        "revoked_at": record.revoked_at,
    }


async def _with_keys(opened: Sources, work: Callable[[KeyTools], Awaitable[T]]) -> T:
    async with opened.keys(GatewaySettings()) as tools:
        return await work(tools)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option("--role", help="What the key may do.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.001, help="Requests per second.")
    ] = None,
    burst: Annotated[int | None, typer.Option("--burst", min=1, help="Requests at once.")] = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once (only its digest is kept).

    Needs the gateway's server secret: REGIONSTORE_AUTH__SECRET, else the local stack's.
    """

    async def create(tools: KeyTools) -> tuple[str, KeyRecord]:
        return await tools.store.issue(tools.signing(), role, name=name, rate=rate, burst=burst)

    with reported():
        key, record = asyncio.run(_with_keys(sources(ctx), create))
        if as_json:
            _print_json({"key": key, **_key_json(record)})
            return
        typer.echo(f"key id: {record.key_id}  role: {record.role.value}", err=True)
        typer.echo("the key (shown once; keep it secret):", err=True)
        typer.echo(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Every key: id, role, created, limits, state, name (never a key or its digest)."""

    async def every(tools: KeyTools) -> list[KeyRecord]:
        return await tools.store.all()

    with reported():
        records = asyncio.run(_with_keys(sources(ctx), every))
        if as_json:
            _print_json([_key_json(record) for record in records])
            return
        for record in records:
            typer.echo(describe(record))


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (keys list).")],
    as_json: AsJson = False,
) -> None:
    """Revoke a key: the gateways refuse it within their key cache's refresh time."""

    async def revoke(tools: KeyTools) -> KeyRecord | None:
        return await tools.store.revoke(key_id)

    with reported():
        record = asyncio.run(_with_keys(sources(ctx), revoke))
        if record is None:
            raise ToolError(f"no key {key_id}")
        if as_json:
            _print_json(_key_json(record))
            return
        typer.echo(f"revoked {record.key_id} ({record.role.value}) at {record.revoked_at}")
