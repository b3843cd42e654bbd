"""``regionstore seed``, ``import`` and ``generate``: load customers, or write them as Olist CSV.

Exit status: 0 when every record got a definite answer (rejections are data, and are reported),
1 when records failed, stayed of unknown outcome, or the gateway could not be reached, 2 for a
file that is not an Olist customers CSV.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from regionstore_tools.dataset.loader import (
    GatewayUnavailableError,
    LoadOptions,
    LoadSummary,
    Rejection,
    Row,
    check_reachable,
    load,
    open_client,
    rows,
)
from regionstore_tools.dataset.olist import generate
from regionstore_tools.dataset.olist_csv import (
    CsvFormatError,
    count_rows,
    read_customers,
    write_customers,
)
from regionstore_tools.gateway import ToolError

SHOWN_EXAMPLES = 10


def seed_customers(
    url: str, api_key: str | None, count: int, *, seed: int, options: LoadOptions, progress: bool
) -> int:
    """Send ``count`` generated customers; the exit status."""
    records = rows(generate(count, seed=seed))
    return _send(url, api_key, records, count, "record", options=options, progress=progress)


def import_csv(
    url: str, api_key: str | None, path: Path, *, options: LoadOptions, progress: bool
) -> int:
    """Send an Olist customers CSV, streamed; the exit status."""
    try:
        with path.open("rb") as raw:
            total = count_rows(raw)
        with path.open(encoding="utf-8-sig", newline="") as stream:
            records = read_customers(stream, name=str(path))
            return _send(url, api_key, records, total, "line", options=options, progress=progress)
    except OSError as error:
        raise ToolError(f"cannot read {path}: {error.strerror or error}", 2) from error
    except CsvFormatError as error:
        raise ToolError(str(error), 2) from error


def generate_csv(count: int, *, seed: int, out: str) -> int:
    """Write ``count`` generated customers as Olist CSV to ``out`` ('-': stdout)."""
    customers = generate(count, seed=seed)
    if out == "-":
        written = write_customers(customers, sys.stdout)
    else:
        try:
            with Path(out).open("w", encoding="utf-8", newline="") as stream:
                written = write_customers(customers, stream)
        except OSError as error:
            raise ToolError(f"cannot write {out}: {error.strerror or error}", 2) from error
    print(f"wrote {written:,} customers to {out} (seed {seed})", file=sys.stderr)
    return 0


def _send(
    url: str,
    api_key: str | None,
    records: Iterable[Row | Rejection],
    total: int,
    label: str,
    *,
    options: LoadOptions,
    progress: bool,
) -> int:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
        console=Console(stderr=True),
        disable=not progress,
    )
    with bar:
        task = bar.add_task("loading", total=total, counts="")
        summary, stopped = asyncio.run(_load(url, api_key, records, options, bar, task))
    print(format_summary(summary, label, total=total if stopped else None))
    if stopped:
        raise ToolError(f"stopped: {stopped}")
    return 1 if summary.failed or summary.unknown else 0


async def _load(
    url: str,
    api_key: str | None,
    records: Iterable[Row | Rejection],
    options: LoadOptions,
    bar: Progress,
    task: TaskID,
) -> tuple[LoadSummary, str | None]:
    def advance(done: int, summary: LoadSummary) -> None:
        counts = (
            f"accepted {summary.accepted:,}  rejected {summary.rejected:,}"
            f"  unknown {summary.unknown:,}  failed {summary.failed:,}"
        )
        bar.update(task, advance=done, counts=counts)

    async with open_client(url, options, api_key) as client:
        try:
            await check_reachable(client)
        except httpx.TransportError as error:
            raise ToolError(
                f"cannot reach the gateway at {url}: {type(error).__name__}: {error}"
            ) from error
        try:
            return await load(records, client, options=options, on_progress=advance), None
        except GatewayUnavailableError as error:
            return error.summary, error.reason


def format_summary(summary: LoadSummary, label: str = "record", *, total: int | None = None) -> str:
    """The end-of-run report: counts, grouped reasons with examples, elapsed time and rate."""
    lines = [f"accepted  {summary.accepted:>10,}", f"rejected  {summary.rejected:>10,}"]
    lines += [f"  {count:>8,} x {reason}" for reason, count in summary.rejections.most_common()]
    for example in summary.examples[:SHOWN_EXAMPLES]:
        who = f" ({example.customer_id})" if example.customer_id else ""
        lines.append(f"    e.g. {label} {example.number}{who}: {example.reason}")
    if summary.unknown:
        lines.append(f"unknown   {summary.unknown:>10,}  (may or may not have been taken)")
        lines += [f"  {count:>8,} x {reason}" for reason, count in summary.unknowns.most_common()]
    lines.append(f"failed    {summary.failed:>10,}")
    lines += [f"  {count:>8,} x {reason}" for reason, count in summary.failures.most_common()]
    if total is not None:
        lines.append(f"not sent  {max(total - summary.processed, 0):>10,}")
    lines.append(f"elapsed   {summary.elapsed_s:>10.2f} s")
    lines.append(f"rate      {summary.rate:>10,.0f} records/s")
    return "\n".join(lines)
