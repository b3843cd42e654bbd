"""``regionstore repair``: its refusal of an unknown region, and its report for a person."""

from __future__ import annotations

from rich.console import Console
from typer.testing import CliRunner

from regionstore_recovery.repair import Report
from regionstore_tools.cli import app
from regionstore_tools.repair_cli import rendered

runner = CliRunner()


def text(report: Report) -> str:
    console = Console(width=200, record=True)
    console.print(rendered(report))
    return console.export_text()


def test_an_unknown_region_is_one_line_and_no_store_is_read() -> None:
    result = runner.invoke(app, ["repair", "--region", "region_9"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no region 'region_9': the map has region_1, region_2, region_3"
    )


def test_the_report_counts_each_kind_per_region_and_what_was_done() -> None:
    report = Report(
        regions=("region_1", "region_2"),
        buckets=4096,
        buckets_differing=12,
        summed={"region_1": 100, "region_2": 40},
        copies_read={"region_1": 30},
        found={"region_2": {"missing": 7}},
        republished=7,
    )
    shown = text(report)
    assert "4,096 buckets compared, 12 differing" in shown
    (missing,) = [line for line in shown.splitlines() if line.startswith("│ missing")]
    assert [cell.strip() for cell in missing.split("│")[1:4]] == ["missing", "0", "7"]
    assert "published again 7, tombstoned 0, unrepairable 0, failed 0" in shown


def test_a_dry_run_says_nothing_changed() -> None:
    assert "dry run: nothing changed" in text(Report(regions=("region_1",), dry_run=True))
