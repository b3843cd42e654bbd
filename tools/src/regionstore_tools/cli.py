"""``regionstore``: the stack's status, regions, customers, data loading, the stores' audit and
the dead letters.

Commands talk to the gateway over HTTP (``--url``, else ``REGIONSTORE_GATEWAY_URL``, else
http://127.0.0.1:8000) with the API key found by ``regionstore_tools.settings``; ``audit`` reads
the regional stores directly (``REGIONSTORE_STORES__*``); ``dlq`` (in ``dlq_cli``) reads and writes
Kafka directly (``REGIONSTORE_KAFKA__*``), and the on-call commands (``regionstore_tools.oncall``:
``pending``, ``audit-log``, ``keys``) read Kafka and the gateway's Redis. A failure is one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from regionstore_shared.settings import CommonSettings
from regionstore_tools import oncall, render
from regionstore_tools.dataset.cli import generate_csv, import_csv, seed_customers
from regionstore_tools.dataset.loader import LoadOptions
from regionstore_tools.dlq_cli import dlq_app
from regionstore_tools.drain import Backlog, DrainWatch
from regionstore_tools.gateway import (
    Customer,
    CustomerPage,
    Gateway,
    Region,
    RegionList,
    ToolError,
    parse,
)
from regionstore_tools.repair_cli import repair
from regionstore_tools.reporting import reported as _reported
from regionstore_tools.settings import ToolSettings
from regionstore_tools.store_audit import StoreUnreadableError, audit_configured_stores

app = typer.Typer(
    name="regionstore",
    help="Operate a regionstore deployment: status, regions, customers, data, audit, dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
region_app = typer.Typer(
    help="Take a region down, or bring it back (needs an operator key).", no_args_is_help=True
)
app.add_typer(region_app, name="region")
app.add_typer(dlq_app, name="dlq")

T = TypeVar("T")

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Gateway URL (default: REGIONSTORE_GATEWAY_URL, else http://127.0.0.1:8000).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON answer.")]
Every = Annotated[float, typer.Option("--every", min=0.1, help="Seconds between readings.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Items per request.")]
Concurrency = Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")]
Retries = Annotated[
    int,
    typer.Option(
        "--retries", min=0, help="Retries of a batch's unanswered items (same batch, same key)."
    ),
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
Seed = Annotated[int, typer.Option("--seed", help="Same seed, same customers.")]


def _out() -> Console:
    return Console(soft_wrap=False)


@contextmanager
def _gateway(ctx: typer.Context, url: str | None) -> Iterator[Gateway]:
    """A client of the gateway; of the one in memory when the app was invoked with a transport
    as its context object (the unit tests)."""
    settings = ToolSettings()
    key = settings.key()
    transport = ctx.obj if isinstance(ctx.obj, httpx.BaseTransport) else None
    with Gateway(url or settings.gateway_url, key, transport=transport) as gateway:
        yield gateway


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


@app.command()
def status(
    ctx: typer.Context,
    url: Url = None,
    as_json: AsJson = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    every: Every = 1.0,
) -> None:
    """Regions: status, zip prefixes, replicas, parked backlog; and the consumers' lag."""
    with _reported(), _gateway(ctx, url) as gateway:
        if not watch:
            body = gateway.regions()
            if as_json:
                _print_json(body)
            else:
                _out().print(render.regions(parse(RegionList, body)))
            return
        if as_json:
            _watch_json(gateway, every)
        else:
            _watch_table(gateway, every)


def _watch_json(gateway: Gateway, every: float) -> None:
    """One JSON line per reading (an error reading is reported and the watch goes on)."""
    try:
        while True:
            try:
                typer.echo(json.dumps(gateway.regions(), separators=(",", ":")))
            except ToolError as error:
                typer.echo(f"error: {error}", err=True)
            time.sleep(every)
    except KeyboardInterrupt:
        return


def _watch_table(gateway: Gateway, every: float) -> None:
    def reading() -> Any:
        try:
            return render.regions(parse(RegionList, gateway.regions()))
        except ToolError as error:
            return Text(f"error: {error} (retrying every {every:g} s)", style="bold red")

    try:
        with Live(reading(), console=_out(), auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(reading(), refresh=True)
    except KeyboardInterrupt:
        return


def _set_status(
    ctx: typer.Context, name: str, new_status: str, url: str | None, as_json: bool
) -> None:
    with _reported(), _gateway(ctx, url) as gateway:
        body = gateway.set_status(name, new_status)
        if as_json:
            _print_json(body)
        else:
            _out().print(render.region_line(parse(Region, body)))


@region_app.command("down")
def region_down(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Region name, e.g. region_2.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Mark a region unavailable: its writes are parked until it comes back."""
    _set_status(ctx, name, "unavailable", url, as_json)


@region_app.command("up")
def region_up(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Region name, e.g. region_2.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Mark a region available: recovery replays what was parked for it."""
    _set_status(ctx, name, "available", url, as_json)


@app.command()
def get(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="The customer id.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """One customer, from its home region or, when home is down, a replica."""
    with _reported(), _gateway(ctx, url) as gateway:
        body = gateway.customer(customer_id)
        if as_json:
            _print_json(body)
        else:
            _out().print(render.customer(parse(Customer, body)))


@app.command()
def export(
    ctx: typer.Context,
    text: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="A customer id; with --person, a customer_unique_id (every id of the person).",
        ),
    ],
    person: Annotated[bool, typer.Option("--person", help="ID is a customer_unique_id.")] = False,
    url: Url = None,
) -> None:
    """Everything regionstore holds about a customer (operator; recorded in the audit trail):
    every region's copy, parked and dead-lettered commands, audit events. JSON."""
    with _reported(), _gateway(ctx, url) as gateway:
        body = gateway.export(text, person=person)
        _print_json(body)
        if not body.get("complete", True):
            raise ToolError(f"incomplete: could not read {', '.join(body['unreadable'])}", 3)


UNIQUE_ID = re.compile(r"[0-9a-fA-F]{32}")


@app.command()
def find(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="ID", help="A customer id or a unique id.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """The customer with this id and the customers of the person with this unique id (Olist's
    are both 32 hex characters, so both are looked up); every region is asked."""
    with _reported(), _gateway(ctx, url) as gateway:
        one = gateway.customer_or_none(text)
        person: dict[str, Any] = {"items": []}
        if UNIQUE_ID.fullmatch(text.strip()):
            person = gateway.customers({"unique_id": text.strip(), "limit": 500})
        items = [one] if one else []
        items += [c for c in person["items"] if not one or c["customer_id"] != one["customer_id"]]
        body = {**person, "items": items, "next_cursor": None}
        if as_json:
            _print_json(body)
        else:
            _out().print(render.page(parse(CustomerPage, body)))


@app.command("list")
def list_customers(
    ctx: typer.Context,
    url: Url = None,
    as_json: AsJson = False,
    region: Annotated[str | None, typer.Option(help="Home region.")] = None,
    zip_min: Annotated[int | None, typer.Option(min=0, max=99999, help="Lowest zip.")] = None,
    zip_max: Annotated[int | None, typer.Option(min=0, max=99999, help="Highest zip.")] = None,
    zip_prefix: Annotated[
        int | None, typer.Option("--zip", min=0, max=99999, help="Exactly this zip prefix.")
    ] = None,
    city: Annotated[str | None, typer.Option(help="City prefix, any case and accents.")] = None,
    state: Annotated[str | None, typer.Option(help="UF code, e.g. SP.")] = None,
    unique_id: Annotated[
        str | None, typer.Option(help="The customers of one person (customer_unique_id).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Page size.")] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
) -> None:
    """Customers matching every filter, one page at a time, in the order the page states
    (by id; by zip for a zip range; by city for a city)."""
    if zip_prefix is not None:
        zip_min = zip_max = zip_prefix
    params = {
        "region": region,
        "zip_min": zip_min,
        "zip_max": zip_max,
        "city": city,
        "state": state,
        "unique_id": unique_id,
        "limit": limit,
        "cursor": cursor,
    }
    with _reported(), _gateway(ctx, url) as gateway:
        body = gateway.customers({k: v for k, v in params.items() if v is not None})
        if as_json:
            _print_json(body)
        else:
            _out().print(render.page(parse(CustomerPage, body)))


def _options(batch_size: int, concurrency: int, retries: int) -> LoadOptions:
    return LoadOptions(batch_size=batch_size, concurrency=concurrency, retries=retries)


def _progress(no_progress: bool) -> bool:
    return not no_progress and Console(stderr=True).is_terminal


@app.command()
def seed(
    count: Annotated[int, typer.Argument(metavar="N", min=0, help="How many customers.")],
    url: Url = None,
    seed: Seed = 0,
    batch_size: BatchSize = 1000,
    concurrency: Concurrency = 4,
    retries: Retries = 5,
    no_progress: NoProgress = False,
) -> None:
    """Send N generated Olist-style customers through the batch API (needs a writer key)."""
    with _reported():
        settings = ToolSettings()
        code = seed_customers(
            url or settings.gateway_url,
            settings.key(),
            count,
            seed=seed,
            options=_options(batch_size, concurrency, retries),
            progress=_progress(no_progress),
        )
    raise typer.Exit(code)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="olist_customers_dataset.csv")],
    url: Url = None,
    batch_size: BatchSize = 1000,
    concurrency: Concurrency = 4,
    retries: Retries = 5,
    no_progress: NoProgress = False,
) -> None:
    """Send an Olist customers CSV through the batch API (needs a writer key)."""
    with _reported():
        settings = ToolSettings()
        code = import_csv(
            url or settings.gateway_url,
            settings.key(),
            path,
            options=_options(batch_size, concurrency, retries),
            progress=_progress(no_progress),
        )
    raise typer.Exit(code)


@app.command()
def generate(
    count: Annotated[int, typer.Argument(metavar="N", min=0, help="How many customers.")],
    out: Annotated[str, typer.Option("--out", help="Output file, '-' for stdout.")] = "-",
    seed: Seed = 0,
) -> None:
    """Write N generated customers as an Olist customers CSV (no gateway needed)."""
    with _reported():
        generate_csv(count, seed=seed, out=out)


@app.command()
def drain(
    ctx: typer.Context,
    url: Url = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="One bar per region until every backlog is 0.")
    ] = False,
    every: Every = 1.0,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="With --watch: give up after this many seconds.")
    ] = None,
) -> None:
    """Recovery's parked backlog per region; with --watch, follow it until it is drained.

    Exit status 0 once every backlog is 0; 1 when --timeout passes first.
    """
    with _reported(), _gateway(ctx, url) as gateway:
        tracker = DrainWatch()
        if not watch:
            for backlog in tracker.read(parse(RegionList, gateway.regions())):
                typer.echo(_line(backlog))
            return
        _drain(gateway, tracker, every, timeout)


def _n(backlog: Backlog) -> str:
    return render.count(backlog.pending)


def _drain(gateway: Gateway, tracker: DrainWatch, every: float, timeout: float | None) -> None:
    started = time.monotonic()
    console = _out()
    with _Bars(console) if console.is_terminal else _Lines() as display:
        while True:
            backlogs = tracker.read(parse(RegionList, _retrying(gateway.regions, every)))
            display.show(backlogs)
            if tracker.done(backlogs):
                break
            if timeout is not None and time.monotonic() - started >= timeout:
                left = ", ".join(f"{b.region} {_n(b)}" for b in backlogs if not b.drained)
                raise ToolError(f"still pending after {timeout:g} s: {left}")
            time.sleep(every)
    replayed = ", ".join(f"{region} {peak:,}" for region, peak in tracker.peaks.items() if peak)
    elapsed = time.monotonic() - started
    typer.echo(f"drained in {elapsed:.1f} s; replayed: {replayed or 'nothing was pending'}")


def _line(backlog: Backlog) -> str:
    return f"{backlog.region:<12} {backlog.status:<12} pending {_n(backlog)}"


class _Lines:
    """Drain progress for a pipe or a log: a line per region whenever its backlog changes."""

    def __init__(self) -> None:
        self.shown: dict[str, tuple[str, int | None]] = {}

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def show(self, backlogs: list[Backlog]) -> None:
        for backlog in backlogs:
            state = (backlog.status, backlog.pending)
            if self.shown.get(backlog.region) != state:
                self.shown[backlog.region] = state
                typer.echo(_line(backlog))


class _Bars:
    """Drain progress for a terminal: one bar per region, its peak backlog as the total."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            TextColumn("{task.fields[status]:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pending {task.fields[pending]}"),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def show(self, backlogs: list[Backlog]) -> None:
        for backlog in backlogs:
            if backlog.region not in self.tasks:
                self.tasks[backlog.region] = self.progress.add_task(
                    backlog.region, status="", pending=""
                )
            # Nothing pending ever: a full bar of one, rather than an empty bar of none.
            self.progress.update(
                self.tasks[backlog.region],
                total=backlog.peak or 1,
                completed=backlog.replayed if backlog.peak else 1,
                status=backlog.status,
                pending=_n(backlog),
            )


def _retrying(read: Callable[[], T], every: float) -> T:
    """A reading; one failed reading is retried once, so a restart does not end the watch."""
    try:
        return read()
    except ToolError:
        time.sleep(every)
        return read()


@app.command()
def audit(
    prefix: Annotated[
        str | None, typer.Option(help="Only customers whose id starts with this.")
    ] = None,
    within: Annotated[
        float, typer.Option(min=0, help="Audit again until clean, for up to this many seconds.")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the regional stores against each other (read directly: REGIONSTORE_STORES__*).

    Each customer's newest copy in any store stands for its expected state: every region of its
    placement (home and replicas, from its zip) must hold that version with the same data, no
    live copy may exist outside the placement, and nothing may be live whose newest version is a
    delete. A write missing from every store, or applied without being acknowledged, needs the
    writer's own record and is not seen here. Run it when nothing is pending, or with --within.

    Exit status 0 when clean, 1 when not, 2 when a store cannot be read.
    """
    with _reported():
        try:
            report = asyncio.run(
                audit_configured_stores(CommonSettings(), prefix=prefix, within_s=within)
            )
        except StoreUnreadableError as error:
            raise ToolError(str(error), 2) from error
        if as_json:
            _print_json({**asdict(report), "clean": report.clean})
        else:
            _out().print(render.audit(report))
    raise typer.Exit(0 if report.clean else 1)


oncall.register(app)
app.command("repair")(repair)


def main() -> None:
    """The console script."""
    app()
