"""``regionstore dlq``: list, show and redrive dead letters (reads Kafka: REGIONSTORE_KAFKA__*).

A failure is one line on stderr and a non-zero exit: 1 for a refusal (an unknown id, a message
that is no command, a dead letter redriven already), 2 when Kafka cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from regionstore_shared.pipeline import ERROR_HEADER
from regionstore_shared.settings import CommonSettings
from regionstore_tools.dlq import (
    DeadLetterLog,
    Entry,
    Outcome,
    Redrive,
    entries,
    find,
    first_line,
    operator,
    redrive,
    redrive_all,
)
from regionstore_tools.dlq_kafka import KafkaDeadLetterLog
from regionstore_tools.gateway import ToolError

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Dead letters: commands a region refused for good, and messages that were no "
    "command. Reads Kafka directly (REGIONSTORE_KAFKA__*).",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Ident = Annotated[str, typer.Argument(metavar="ID", help="PARTITION:OFFSET, as `list` shows.")]


@dlq_app.command("list")
def list_dead_letters(
    ctx: typer.Context,
    as_json: AsJson = False,
    open_only: Annotated[
        bool, typer.Option("--open", help="Only dead letters not redriven yet.")
    ] = False,
) -> None:
    """Every dead letter, oldest first: why, from where, and whether it was redriven."""

    async def read(log: DeadLetterLog) -> list[Entry]:
        return [e for e in await entries(log) if not (open_only and e.redrive is not None)]

    found = _run(ctx, read)
    if as_json:
        _print_json([_summary(entry) for entry in found])
    else:
        lines = _lines(found, _out().width) if found else ["No dead letters."]
        typer.echo("\n".join(lines))


@dlq_app.command()
def show(ctx: typer.Context, ident: Ident, as_json: AsJson = False) -> None:
    """One dead letter in full: its headers, its command (or the message that was none) and
    its redrive."""

    async def read(log: DeadLetterLog) -> Entry:
        return find(await entries(log), ident)

    entry = _run(ctx, read)
    if as_json:
        _print_json(_detail(entry))
    else:
        _out().print(_shown(entry))


@dlq_app.command("redrive")
def redrive_dead_letters(
    ctx: typer.Context,
    ident: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="PARTITION:OFFSET, as `list` shows."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every dead letter holding a command not redriven yet.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Publish a dead letter redriven before once more.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Publish a dead letter's command again to the command topic, marked republished, so the
    version guard decides: where a region holds something newer it changes nothing.

    A message that is no command cannot be redriven. With --all, such messages and the dead
    letters redriven already are left as they are.
    """
    if (ident is None) == (not every):
        raise_one_line(ToolError("name one dead letter (ID) or pass --all, not both"))
    by = operator()

    async def act(log: DeadLetterLog) -> Outcome:
        found = await entries(log)
        if every:
            return await redrive_all(log, found, by=by)
        return Outcome(redriven=[await redrive(log, find(found, str(ident)), by=by, again=again)])

    outcome = _run(ctx, act)
    if as_json:
        _print_json(
            {
                "redriven": [r.model_dump(mode="json") for r in outcome.redriven],
                "skipped": [{"id": i, "reason": why} for i, why in outcome.skipped],
            }
        )
        return
    for done in outcome.redriven:
        typer.echo(_redriven_line(done))
    for skipped, why in outcome.skipped:
        typer.echo(f"skipped {skipped}: {why}")
    if every:
        typer.echo(f"redrove {len(outcome.redriven)}, skipped {len(outcome.skipped)}")


def raise_one_line(error: ToolError) -> NoReturn:
    """End the command with ``error`` on one line of stderr."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(error.exit_code)


def _run(ctx: typer.Context, work: Callable[[DeadLetterLog], Awaitable[T]]) -> T:
    """Run ``work`` against Kafka, or against the log a test passed as the context object."""
    with _reported():
        if isinstance(ctx.obj, DeadLetterLog):
            return asyncio.run(_on(ctx.obj, work))
        return asyncio.run(_on_kafka(CommonSettings(), work))


async def _on(log: DeadLetterLog, work: Callable[[DeadLetterLog], Awaitable[T]]) -> T:
    return await work(log)


async def _on_kafka(settings: CommonSettings, work: Callable[[DeadLetterLog], Awaitable[T]]) -> T:
    async with KafkaDeadLetterLog(settings) as log:
        return await work(log)


@contextmanager
def _reported() -> Iterator[None]:
    try:
        yield
    except ToolError as error:
        raise_one_line(error)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise_one_line(ToolError(f"invalid setting {where}: {first['msg']}"))


def _out() -> Console:
    return Console(soft_wrap=False)


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _summary(entry: Entry) -> dict[str, Any]:
    letter = entry.letter
    return {
        "id": letter.id,
        "at": letter.at.isoformat(),
        "kind": letter.kind,
        "region": letter.region,
        "source_topic": letter.source_topic,
        "customer_id": letter.customer_id,
        "command_id": letter.command_id,
        "error": letter.error,
        "redriven": None if entry.redrive is None else entry.redrive.model_dump(mode="json"),
    }


def _detail(entry: Entry) -> dict[str, Any]:
    letter = entry.letter
    command = letter.command
    body = _summary(entry) | {
        "headers": {name: value.decode(errors="replace") for name, value in letter.headers},
        "command": None if command is None else command.model_dump(mode="json"),
    }
    if command is None:
        body["message"] = None if letter.value is None else letter.value.decode(errors="replace")
    return body


def _lines(found: list[Entry], width: int) -> list[str]:
    """One aligned line per dead letter, its error cut to what the terminal has room for."""
    rows = [
        [
            entry.letter.id,
            f"{entry.letter.at:%Y-%m-%d %H:%M:%S}",
            entry.letter.kind,
            entry.letter.region or "-",
            entry.letter.customer_id or "-",
            "-" if entry.redrive is None else f"{entry.redrive.at:%Y-%m-%d %H:%M:%S}",
        ]
        for entry in found
    ]
    head = ["ID", "AT (UTC)", "KIND", "REGION", "CUSTOMER", "REDRIVEN (UTC)"]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    room = max(30, width - sum(widths) - 2 * len(widths))
    errors = ["ERROR", *(first_line(entry.letter.error, room) for entry in found)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=True)), error])
        for row, error in zip([head, *rows], errors, strict=True)
    ]


def _shown(entry: Entry) -> RenderableType:
    detail = _detail(entry)
    fields = Table(show_header=False, box=None, pad_edge=False)
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    for name in ("id", "at", "kind", "region", "source_topic", "customer_id", "command_id"):
        fields.add_row(name, str(detail[name] if detail[name] is not None else "-"))
    fields.add_row("error", detail["error"] or "-")
    for name, value in detail["headers"].items():
        if name != ERROR_HEADER:
            fields.add_row(f"header {name}", value)
    redriven = entry.redrive
    fields.add_row("redriven", "no" if redriven is None else _redriven_line(redriven))
    if detail["command"] is not None:
        body: RenderableType = Syntax(json.dumps(detail["command"], indent=2), "json")
        heading = "command (redrive publishes it again, marked republished):"
    else:
        body = Text(detail["message"] or "(empty message)")
        heading = "message (not a command: it cannot be redriven):"
    return Group(fields, Text(""), Text(heading, style="bold"), body)


def _redriven_line(done: Redrive) -> str:
    return (
        f"redrove {done.dead_letter} (command {done.command_id}) at "
        f"{done.at:%Y-%m-%d %H:%M:%S} UTC by {done.by}: published again to the command topic at "
        f"{done.published_as}"
    )
