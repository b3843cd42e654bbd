"""How ``regionstore pending`` shows a region's parked commands: a summary line and a table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from regionstore_shared.parked import ParkedBacklog, ParkedCommand


def age(seconds: float) -> str:
    """A duration as people read it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def at(ms: int) -> str:
    """A Kafka timestamp as RFC 3339 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_json(backlog: ParkedBacklog, now_ms: int) -> dict[str, Any]:
    """The backlog as ``--json`` prints it."""
    return {
        "region": backlog.region,
        "topic": backlog.topic,
        "pending": backlog.count,
        "oldest_parked_at": at(backlog.oldest_ms) if backlog.oldest_ms is not None else None,
        "oldest_age_s": round(backlog.oldest_age_s(now_ms), 3)
        if backlog.oldest_ms is not None
        else None,
        "sample": [_command_json(command, now_ms) for command in backlog.sample],
    }


def _command_json(command: ParkedCommand, now_ms: int) -> dict[str, Any]:
    return {
        "customer_id": command.customer_id,
        "kind": command.kind,
        "parked_at": at(command.parked_at_ms),
        "age_s": round(max(0.0, (now_ms - command.parked_at_ms) / 1000), 3),
        "reason": command.reason,
        "partition": command.partition,
        "offset": command.offset,
    }


def summary(backlog: ParkedBacklog, now_ms: int) -> str:
    """'region_2: 1,204 parked commands in pending.region_2; the oldest waits for 12 min ...'."""
    where = f"{backlog.region}: "
    if backlog.count == 0:
        return f"{where}nothing parked in {backlog.topic}"
    noun = "command" if backlog.count == 1 else "commands"
    line = f"{where}{backlog.count:,} parked {noun} in {backlog.topic}"
    if backlog.oldest_ms is None:
        return f"{line}; the oldest could not be read in time"
    waited = age(backlog.oldest_age_s(now_ms))
    return f"{line}; the oldest has waited {waited} (parked at {at(backlog.oldest_ms)})"


def render(backlog: ParkedBacklog, now_ms: int) -> RenderableType:
    """The summary, then the oldest commands, oldest first."""
    head = Text(summary(backlog, now_ms))
    if not backlog.sample:
        return head
    table = Table(title=f"The {len(backlog.sample)} oldest", title_justify="left")
    table.add_column("Parked at (UTC)", no_wrap=True)
    table.add_column("Waited", justify="right", no_wrap=True)
    table.add_column("Customer", no_wrap=True)
    table.add_column("Kind", no_wrap=True)
    table.add_column("Why", no_wrap=True)
    table.add_column("Partition:offset", justify="right", no_wrap=True)
    for command in backlog.sample:
        table.add_row(
            at(command.parked_at_ms),
            age(max(0.0, (now_ms - command.parked_at_ms) / 1000)),
            command.customer_id,
            command.kind or "?",
            command.reason or "-",
            f"{command.partition}:{command.offset}",
        )
    return Group(head, table)
