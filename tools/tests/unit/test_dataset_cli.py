"""``regionstore seed``, ``import`` and ``generate`` without a gateway: arguments, summaries."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from regionstore_tools.cli import app
from regionstore_tools.dataset.cli import format_summary
from regionstore_tools.dataset.loader import LoadSummary, Rejection, Row
from regionstore_tools.dataset.olist import generate
from regionstore_tools.dataset.olist_csv import read_customers

runner = CliRunner()


class TestGenerate:
    def test_to_stdout(self) -> None:
        result = runner.invoke(app, ["generate", "25", "--seed", "9"])
        assert result.exit_code == 0, result.output
        read = [
            r.customer for r in read_customers(io.StringIO(result.stdout)) if isinstance(r, Row)
        ]
        assert read == [c.model_dump() for c in generate(25, seed=9)]
        assert "wrote 25 customers to - (seed 9)" in result.stderr

    def test_to_a_file(self, tmp_path: Path) -> None:
        out = tmp_path / "customers.csv"
        result = runner.invoke(app, ["generate", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8").count("\n") == 4

    def test_unwritable_file_is_one_line(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["generate", "3", "--out", str(tmp_path / "no" / "x.csv")])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: cannot write ")
        assert result.stderr.count("\n") == 1


class TestArguments:
    def test_seed_needs_a_count(self) -> None:
        result = runner.invoke(app, ["seed"])
        assert result.exit_code == 2
        assert "Missing argument 'N'" in result.stderr

    @pytest.mark.parametrize("flag", ["--batch-size", "--concurrency"])
    def test_sizes_must_be_positive(self, flag: str) -> None:
        result = runner.invoke(app, ["seed", "1", flag, "0"])
        assert result.exit_code == 2
        assert flag in result.stderr

    def test_import_of_a_missing_file_is_one_line(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["import", str(tmp_path / "nope.csv"), "--url", "http://x:1"])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: cannot read {tmp_path / 'nope.csv'}: ")
        assert result.stderr.count("\n") == 1

    def test_import_of_another_csv_is_one_line(self, tmp_path: Path) -> None:
        path = tmp_path / "orders.csv"
        path.write_text('"order_id","customer_id"\n1,2\n', encoding="utf-8")
        result = runner.invoke(app, ["import", str(path), "--url", "http://x:1"])
        assert result.exit_code == 2
        assert "missing column(s) customer_unique_id, customer_zip_code_prefix" in result.stderr
        assert result.stderr.count("\n") == 1


class TestFormatSummary:
    def test_counts_reasons_examples_and_rate(self) -> None:
        reason = "customer_zip_code_prefix: zip prefix 500 is outside every region"
        summary = LoadSummary(
            accepted=12_000,
            rejected=3,
            failed=1,
            elapsed_s=2.0,
            rejections=Counter({reason: 2, "customer_zip_code_prefix: 'x' is not a number": 1}),
            failures=Counter({"kafka: KafkaTimeoutError()": 1}),
            examples=[Rejection(7, reason, "abc")],
        )
        text = format_summary(summary, "line")
        assert "accepted      12,000" in text
        assert f"       2 x {reason}" in text
        assert f"e.g. line 7 (abc): {reason}" in text
        assert "       1 x kafka: KafkaTimeoutError()" in text
        assert "6,002 records/s" in text
        assert "not sent" not in text
        assert "unknown" not in text

    def test_unknown_outcomes_are_their_own_line(self) -> None:
        summary = LoadSummary(
            accepted=5, unknown=2, elapsed_s=1.0, unknowns=Counter({"kafka: timed out": 2})
        )
        text = format_summary(summary)
        assert "unknown            2  (may or may not have been taken)" in text
        assert "       2 x kafka: timed out" in text
        assert "failed             0" in text

    def test_stopped_load_says_what_was_not_sent(self) -> None:
        summary = LoadSummary(accepted=10, elapsed_s=1.0, stopped="gone")
        assert "not sent          90" in format_summary(summary, total=100)
