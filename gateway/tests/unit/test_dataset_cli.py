"""The command line, without a gateway: parsing, the generate command, the summary."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from regionstore_gateway.dataset.cli import DatasetSettings, build_parser, format_summary, main
from regionstore_gateway.dataset.loader import LoadSummary, Rejection, Row
from regionstore_gateway.dataset.olist import generate
from regionstore_gateway.dataset.olist_csv import read_customers


class TestMain:
    def test_generate_to_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["generate", "--count", "25", "--seed", "9", "--out", "-"]) == 0
        out, err = capsys.readouterr()
        read = [r.customer for r in read_customers(io.StringIO(out)) if isinstance(r, Row)]
        assert read == [c.model_dump() for c in generate(25, seed=9)]
        assert "wrote 25 customers to - (seed 9)" in err

    def test_count_is_required(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as caught:
            main(["seed"])
        assert caught.value.code == 2
        assert "--count" in capsys.readouterr().err

    @pytest.mark.parametrize("flag", ["--batch-size", "--concurrency"])
    def test_sizes_must_be_positive(self, flag: str) -> None:
        with pytest.raises(SystemExit):
            main(["seed", "--count", "1", flag, "0"])


class TestParser:
    def test_defaults(self) -> None:
        args = build_parser("http://gw:1").parse_args(["seed", "--count", "10"])
        assert (args.url, args.batch_size, args.concurrency, args.seed) == (
            "http://gw:1",
            1000,
            4,
            0,
        )

    def test_url_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_GATEWAY_URL", "http://elsewhere:9000")
        assert DatasetSettings().gateway_url == "http://elsewhere:9000"


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

    def test_stopped_load_says_what_was_not_sent(self) -> None:
        summary = LoadSummary(accepted=10, elapsed_s=1.0, stopped="gone")
        assert "not sent          90" in format_summary(summary, total=100)
