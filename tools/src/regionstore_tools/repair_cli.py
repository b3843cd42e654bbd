"""``regionstore repair``: compare the regions now and repair what differs (reads the stores,
``REGIONSTORE_STORES__*``, and writes Kafka, ``REGIONSTORE_KAFKA__*``).

The same pass as the recovery service's background repair (:mod:`regionstore_recovery.repair`),
run once, unpaced unless asked, and named in the audit trail by the operator who ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from pymongo.errors import PyMongoError
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from regionstore_recovery.repair import Options, Repairer, Report
from regionstore_recovery.repair_sinks import CommandTopic, GuardedTombstones
from regionstore_shared.apply import BatchApplier, Suspicion
from regionstore_shared.audit_trail import AuditTrail, SystemActor
from regionstore_shared.clients import customers, kafka_producer, mongo_clients
from regionstore_shared.documents import Collection
from regionstore_shared.indexes import ensure_indexes
from regionstore_shared.settings import CommonSettings
from regionstore_shared.status import NodeStatus
from regionstore_tools.dlq import operator
from regionstore_tools.gateway import ToolError
from regionstore_tools.reporting import reported
from regionstore_tools.store_audit import APPNAME

# Exit status when a store or Kafka cannot be reached, as ``audit``'s.
UNREACHABLE = 2

KINDS = (
    ("missing", "a region of the placement holds nothing, or an older tombstone"),
    ("older", "a region of the placement holds an older version"),
    ("outside", "a live copy outside the placement"),
    ("deleted", "a live copy whose newest version is a delete"),
    ("lost", "the newest write left only tombstones: cannot be repaired"),
)


class _AsAsked:
    """Statuses for the command line's tombstones: none marked, so every region is written
    (an operator who runs ``repair --region R`` means R)."""

    async def all(self) -> dict[str, NodeStatus]:
        return {}


def repair(
    region: Annotated[
        str | None, typer.Option("--region", help="Repair only this region's copies.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compare and report; change nothing.")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Leave customers written this many seconds ago or less."),
    ] = 30.0,
    pace: Annotated[
        float | None,
        typer.Option(min=1, help="Customer copies read per second over every region."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare every region's copies bucket by bucket and repair what differs: a customer
    missing or older in its placement is published again as the command that wrote its newest
    version (marked republished); a live copy outside its placement, or live after a delete,
    gets a version-guarded tombstone. Each batch of repairs is in the audit trail first.

    Exit status 0 when nothing is left diverging, 1 when something is (a dry run that found
    some, a customer lost everywhere, a repair that failed), 2 when a store or Kafka cannot be
    reached.
    """
    with reported():
        settings = CommonSettings()
        if region is not None and region not in settings.region_map:
            raise ToolError(
                f"no region {region!r}: the map has {', '.join(settings.region_map.names)}"
            )
        options = Options(copies_per_s=pace, grace_s=grace)
        try:
            report = asyncio.run(_run(settings, options, only=region, dry_run=dry_run))
        except PyMongoError as error:
            raise ToolError(f"cannot read the stores: {error}"[:400], UNREACHABLE) from error
        if as_json:
            typer.echo(json.dumps(_body(report), indent=2))
        else:
            Console(soft_wrap=False).print(rendered(report))
    raise typer.Exit(0 if _whole(report) else 1)


async def _run(
    settings: CommonSettings, options: Options, *, only: str | None, dry_run: bool
) -> Report:
    clients = mongo_clients(settings, APPNAME)
    async with contextlib.AsyncExitStack() as stack:
        for client in clients.values():
            stack.push_async_callback(client.close)
        collections: dict[str, Collection] = {
            name: customers(client, settings.store) for name, client in clients.items()
        }
        producer = kafka_producer(settings.kafka, APPNAME)
        stack.push_async_callback(producer.stop)
        if not dry_run:
            await producer.start()
            # A region started empty has lost its indexes with its data.
            await ensure_indexes(collections)
        timeout_s = settings.kafka.request_timeout_ms / 1000
        applier = BatchApplier(
            collections=collections,
            status=_AsAsked(),
            suspicion=Suspicion(0.0),
            parker=None,
            role="repair",
            chunk=settings.store.write_chunk,
        )
        repairer = Repairer(
            collections=collections,
            regions=settings.region_map,
            publisher=CommandTopic(producer, settings.kafka.command_topic, timeout_s=timeout_s),
            tombstones=GuardedTombstones(applier),
            trail=AuditTrail(producer, settings.kafka.audit_topic, timeout_s=timeout_s),
            actor=SystemActor(key_id="repair-cli", role="operator", name=operator()),
            options=options,
        )
        return await repairer.run(only=only, dry_run=dry_run)


def _whole(report: Report) -> bool:
    if report.dry_run:
        return report.diverging == 0
    lost = sum(kinds.get("lost", 0) for kinds in report.found.values())
    return not (lost or report.unrepairable or report.failed)


def _body(report: Report) -> dict[str, Any]:
    return {**asdict(report), "diverging": report.diverging, "whole": _whole(report)}


def rendered(report: Report) -> RenderableType:
    """The report for a person: what was compared, found per region and kind, and done."""
    summed = ", ".join(f"{r} {n:,}" for r, n in report.summed.items())
    read = ", ".join(f"{r} {n:,}" for r, n in report.copies_read.items()) or "none"
    head = (
        f"{report.buckets:,} buckets compared, {report.buckets_differing:,} differing; "
        f"live copies summed on the stores: {summed}; copies read from differing buckets: "
        f"{read}; {report.seconds:.1f} s (the sums {report.summing_s:.1f} s, repairing "
        f"{report.acting_s:.1f} s while reading on)"
    )
    table = Table(title="Diverging copies", title_justify="left")
    table.add_column("Kind")
    for name in report.regions:
        table.add_column(name, justify="right")
    table.add_column("Meaning")
    for kind, meaning in KINDS:
        counts = [report.found.get(name, {}).get(kind, 0) for name in report.regions]
        table.add_row(
            kind,
            *(Text(f"{n:,}", style="bold red" if n else "green") for n in counts),
            meaning,
        )
    lines: list[RenderableType] = [Text(head), table]
    for kind, examples in report.examples.items():
        lines += [Text(f"  {kind}: {example}") for example in examples]
    if report.dry_run:
        lines.append(Text("dry run: nothing changed", style="bold"))
    else:
        lines.append(
            Text(
                f"published again {report.republished:,}, tombstoned {report.tombstoned:,}, "
                f"unrepairable {report.unrepairable:,}, failed {report.failed:,}, "
                f"left settling {report.settling:,}",
                style="bold green" if _whole(report) else "bold red",
            )
        )
    return Group(*lines)
