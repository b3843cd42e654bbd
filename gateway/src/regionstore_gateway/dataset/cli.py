"""``python -m regionstore_gateway.dataset``: seed the gateway, import an Olist CSV, write one.

Exit status: 0 when every record got an answer (rejections are data, and are reported), 1 when
records failed or the gateway could not be reached, 2 for bad arguments or a file that is not an
Olist customers CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from regionstore_gateway.dataset.loader import (
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
from regionstore_gateway.dataset.olist import generate
from regionstore_gateway.dataset.olist_csv import (
    CsvFormatError,
    count_rows,
    read_customers,
    write_customers,
)

DEFAULT_SEED = 0
SHOWN_EXAMPLES = 10


class DatasetSettings(BaseSettings):
    """Where the gateway is, unless ``--url`` says otherwise."""

    model_config = SettingsConfigDict(env_prefix="REGIONSTORE_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser(default_url: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m regionstore_gateway.dataset",
        description="Realistic Olist-style customers: generate them, seed or import them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sending = argparse.ArgumentParser(add_help=False)
    sending.add_argument("--url", default=default_url, help="gateway (default: %(default)s)")
    sending.add_argument("--batch-size", type=_positive, default=1000, help="items per request")
    sending.add_argument(
        "--concurrency", type=_positive, default=4, help="requests in flight (default: 4)"
    )
    sending.add_argument(
        "--retries", type=_count, default=5, help="retries of a batch on 503 or no connection"
    )
    sending.add_argument("--no-progress", action="store_true", help="no progress bar")

    seed = commands.add_parser(
        "seed", parents=[sending], help="send N generated customers to the gateway"
    )
    seed.add_argument("--count", type=_count, required=True, help="how many customers")
    seed.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same customers")

    imported = commands.add_parser(
        "import", parents=[sending], help="send an olist_customers_dataset.csv to the gateway"
    )
    imported.add_argument("path", type=Path, help="CSV in Olist's customers format")

    generated = commands.add_parser("generate", help="write N generated customers as Olist CSV")
    generated.add_argument("--count", type=_count, required=True, help="how many customers")
    generated.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same file")
    generated.add_argument("--out", required=True, help="output file, '-' for stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(DatasetSettings().gateway_url).parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "seed":
            return _send(args, rows(generate(args.count, seed=args.seed)), args.count, "record")
        return _import(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _generate(args: argparse.Namespace) -> int:
    customers = generate(args.count, seed=args.seed)
    if args.out == "-":
        count = write_customers(customers, sys.stdout)
    else:
        with Path(args.out).open("w", encoding="utf-8", newline="") as stream:
            count = write_customers(customers, stream)
    print(f"wrote {count:,} customers to {args.out} (seed {args.seed})", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        with path.open("rb") as raw:
            total = count_rows(raw)
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return _send(args, read_customers(stream, name=str(path)), total, "line")
    except OSError as error:
        _error(f"cannot read {path}: {error.strerror or error}")
    except CsvFormatError as error:
        _error(str(error))
    return 2


def _send(
    args: argparse.Namespace, records: Iterable[Row | Rejection], total: int, label: str
) -> int:
    options = LoadOptions(
        batch_size=args.batch_size, concurrency=args.concurrency, retries=args.retries
    )
    progress = not args.no_progress and sys.stderr.isatty()
    return asyncio.run(_load(args.url, records, options, total, progress, label))


async def _load(
    url: str,
    records: Iterable[Row | Rejection],
    options: LoadOptions,
    total: int,
    progress: bool,
    label: str,
) -> int:
    async with open_client(url, options) as client:
        try:
            await check_reachable(client)
        except httpx.TransportError as error:
            _error(f"cannot reach the gateway at {url}: {type(error).__name__}: {error}")
            return 1
        try:
            summary = await load(records, client, options=options, total=total, progress=progress)
        except GatewayUnavailableError as error:
            print(format_summary(error.summary, label, total=total))
            _error(f"stopped: {error.reason}")
            return 1
    print(format_summary(summary, label))
    return 1 if summary.failed else 0


def format_summary(summary: LoadSummary, label: str = "record", *, total: int | None = None) -> str:
    """The end-of-run report: counts, grouped reasons with examples, elapsed time and rate."""
    lines = [f"accepted  {summary.accepted:>10,}", f"rejected  {summary.rejected:>10,}"]
    lines += [f"  {count:>8,} x {reason}" for reason, count in summary.rejections.most_common()]
    for example in summary.examples[:SHOWN_EXAMPLES]:
        who = f" ({example.customer_id})" if example.customer_id else ""
        lines.append(f"    e.g. {label} {example.number}{who}: {example.reason}")
    lines.append(f"failed    {summary.failed:>10,}")
    lines += [f"  {count:>8,} x {reason}" for reason, count in summary.failures.most_common()]
    if total is not None and summary.stopped is not None:
        lines.append(f"not sent  {max(total - summary.processed, 0):>10,}")
    lines.append(f"elapsed   {summary.elapsed_s:>10.2f} s")
    lines.append(f"rate      {summary.rate:>10,.0f} records/s")
    return "\n".join(lines)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
