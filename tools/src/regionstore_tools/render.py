"""How the command line shows regions, customers and audit reports: Rich tables."""

from __future__ import annotations

from datetime import UTC

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from regionstore_testing.audit import AuditReport
from regionstore_tools.gateway import Customer, CustomerPage, Region, RegionList

STATUS_STYLES = {"available": "green", "unavailable": "bold red", "down": "bold yellow"}
UNKNOWN = "?"

AUDIT_ROWS: tuple[tuple[str, str], ...] = (
    ("lost", "a placement region lacks the newest version, or holds it deleted"),
    ("stale", "a placement region holds an older version"),
    ("mismatched", "a placement region holds the newest version with other data"),
    ("duplicated", "a stray: a live copy outside the customer's placement"),
    ("resurrected", "a live copy of a customer whose newest version is a delete"),
)


def count(value: int | None) -> str:
    """A count with thousands separators; '?' when unknown."""
    return UNKNOWN if value is None else f"{value:,}"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, "yellow"))


def regions(answer: RegionList) -> RenderableType:
    """The region table and the consumers' lag under it."""
    table = Table(title="Regions", title_justify="left")
    table.add_column("Region", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Zip prefixes", no_wrap=True)
    table.add_column("Replicas")
    table.add_column("Set by", no_wrap=True)
    table.add_column("Since", no_wrap=True)
    table.add_column("Pending", justify="right")
    applied = any(region.applied is not None for region in answer.regions)
    if applied:
        table.add_column("Applied", justify="right")
    for region in answer.regions:
        cells: list[RenderableType] = [
            region.name,
            status_text(region.status),
            f"{region.zip_min:05d}-{region.zip_max:05d}",
            ", ".join(region.replicas) or "-",
            set_by(region),
            since(region),
            _pending(region),
        ]
        if applied:
            cells.append(count(region.applied))
        table.add_row(*cells)
    lag = ", ".join(f"{consumer} {count(value)}" for consumer, value in answer.lag.items())
    reasons = [
        Text(f"{region.name} {region.status} (detector): {region.reason}", style="yellow")
        for region in answer.regions
        if region.set_by == "detector" and region.status != "available" and region.reason
    ]
    return Group(table, *reasons, Text(f"Consumer lag: {lag or 'not reported'}"))


def set_by(region: Region) -> str:
    """Who set the status: 'detector', 'operator <key id>', or '-' when nobody did yet."""
    if region.set_by is None:
        return "-"
    if region.set_by == "operator" and region.set_by_key:
        return f"operator {region.set_by_key}"
    return region.set_by


def since(region: Region) -> str:
    """When the status was set, in UTC to the second; '-' when unknown."""
    if region.since is None:
        return "-"
    return region.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pending(region: Region) -> Text:
    if region.pending is None:
        return Text(UNKNOWN, style="yellow")
    return Text(count(region.pending), style="bold yellow" if region.pending else "")


def region_line(region: Region) -> Text:
    """'region_2 is now unavailable (pending 0)'."""
    text = Text(f"{region.name} is now ")
    text.append_text(status_text(region.status))
    text.append(f" (pending {count(region.pending)})")
    return text


def customer(found: Customer) -> Table:
    """One customer, a field per row."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("customer_id", found.customer_id)
    table.add_row("customer_unique_id", found.customer_unique_id)
    table.add_row("zip prefix", f"{found.customer_zip_code_prefix:05d}")
    table.add_row("city", found.customer_city)
    table.add_row("state", found.customer_state)
    table.add_row("home region", found.region)
    served = f"{found.served_by} (replica: home unavailable)" if found.fallback else found.served_by
    table.add_row("served by", served)
    table.add_row("version", str(found.version))
    return table


def page(answer: CustomerPage) -> RenderableType:
    """A page of customers, with what the reader must know: degraded, incomplete, more pages."""
    table = Table()
    table.add_column("customer_id", no_wrap=True)
    table.add_column("zip", justify="right", no_wrap=True)
    table.add_column("city")
    table.add_column("UF", no_wrap=True)
    table.add_column("region", no_wrap=True)
    table.add_column("served by", no_wrap=True)
    for item in answer.items:
        served = Text(item.served_by, style="yellow" if item.fallback else "")
        table.add_row(
            item.customer_id,
            f"{item.customer_zip_code_prefix:05d}",
            item.customer_city,
            item.customer_state,
            item.region,
            served,
        )
    order = f", sorted by {', then '.join(answer.order)}" if answer.order else ""
    notes: list[RenderableType] = [table, Text(f"{len(answer.items)} customer(s){order}")]
    if answer.degraded_regions:
        regions = ", ".join(answer.degraded_regions)
        notes.append(Text(f"degraded: {regions} read from a replica", style="yellow"))
    if answer.incomplete:
        regions = ", ".join(answer.unreachable_regions)
        notes.append(Text(f"incomplete: {regions} could not be read", style="bold red"))
    if answer.next_cursor:
        notes.append(Text(f"more: --cursor {answer.next_cursor}"))
    return Group(*notes)


def audit(report: AuditReport) -> RenderableType:
    """The audit's counts, and a few examples of each divergence."""
    table = Table(title="Store audit", title_justify="left")
    table.add_column("Check")
    table.add_column("Count", justify="right")
    table.add_column("Meaning")
    table.add_row("checked", f"{report.checked:,}", "customers found in any store")
    for kind, meaning in AUDIT_ROWS:
        value: int = getattr(report, kind)
        table.add_row(kind, Text(f"{value:,}", style="bold red" if value else "green"), meaning)
    lines: list[RenderableType] = [table]
    for kind, examples in report.examples.items():
        lines += [Text(f"  {kind}: {example}") for example in examples]
    verdict = "clean" if report.clean else "NOT clean"
    lines.append(Text(verdict, style="bold green" if report.clean else "bold red"))
    return Group(*lines)
