"""A dependency that is down: one line when it goes, a summary in between, one when it is back."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from regionstore_shared.logs import Outages, RepeatFilter, configure_logging


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    """Keeps the records a logger emits."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("test.outages")
    handler = Lines()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def outages(clock: FakeClock, every_s: float = 30.0) -> Outages:
    return Outages(summary_every_s=every_s, clock=clock, logger=logging.getLogger("test.outages"))


class TestOutages:
    def test_a_thousand_failures_in_ten_seconds_log_one_warning(
        self, clock: FakeClock, lines: Lines
    ) -> None:
        tracker = outages(clock)
        for _ in range(1000):
            tracker.failed("kafka", "connection refused")
            clock.now += 0.01
        assert lines.messages() == ["kafka down"]
        (record,) = lines.records
        assert record.levelno == logging.WARNING
        assert (record.__dict__["dependency"], record.__dict__["error"]) == (
            "kafka",
            "connection refused",
        )

    def test_a_summary_every_interval_counts_what_it_stands_for(
        self, clock: FakeClock, lines: Lines
    ) -> None:
        tracker = outages(clock, every_s=5.0)
        start = clock.now
        for i in range(1000):  # 10 s of failures: "down" at 0 s, a summary at 5 s
            clock.now = start + i / 100
            tracker.failed("region_2", f"timed out {i}")
        assert lines.messages() == ["region_2 down", "region_2 still down"]
        summary = lines.records[1]
        assert summary.levelno == logging.WARNING
        assert summary.__dict__["failures"] == 500  # the failures at 0.01 s to 5 s
        assert summary.__dict__["down_for_s"] == 5.0
        assert summary.__dict__["error"] == "timed out 500"

    def test_recovery_logs_back_once(self, clock: FakeClock, lines: Lines) -> None:
        tracker = outages(clock)
        for _ in range(10):
            tracker.failed("redis", "refused")
        clock.now += 12.0
        tracker.ok("redis")
        tracker.ok("redis")
        tracker.ok("redis")
        assert lines.messages() == ["redis down", "redis back"]
        back = lines.records[1]
        assert (back.__dict__["failures"], back.__dict__["down_for_s"]) == (10, 12.0)
        assert not tracker.is_down("redis")

    def test_success_without_a_failure_logs_nothing(self, clock: FakeClock, lines: Lines) -> None:
        tracker = outages(clock)
        for _ in range(100):
            tracker.ok("region_1")
        assert lines.records == []

    def test_dependencies_are_tracked_apart(self, clock: FakeClock, lines: Lines) -> None:
        tracker = outages(clock)
        tracker.failed("region_1", "a")
        tracker.failed("region_3", "b")
        tracker.failed("region_1", "a")
        tracker.ok("region_3")
        assert lines.messages() == ["region_1 down", "region_3 down", "region_3 back"]
        assert tracker.is_down("region_1")

    def test_a_new_failure_after_recovery_is_a_new_outage(
        self, clock: FakeClock, lines: Lines
    ) -> None:
        tracker = outages(clock)
        tracker.failed("kafka", "x")
        tracker.ok("kafka")
        tracker.failed("kafka", "y")
        assert lines.messages() == ["kafka down", "kafka back", "kafka down"]


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class TestRepeatFilter:
    def test_one_record_per_template_within_the_window(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        passed = []
        for i in range(1000):
            rec = record("aiokafka.conn", "Unable connect to node with id %s: %s", i % 3, "boom")
            passed.append(dampener.filter(rec))
            clock.now += 0.01
        assert passed.count(True) == 1
        assert passed[0] is True

    def test_the_first_record_after_the_window_carries_the_count(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        template = "Group Coordinator Request failed: %s"
        assert dampener.filter(record("aiokafka.consumer.group_coordinator", template, "e"))
        for _ in range(40):
            clock.now += 0.5
            assert not dampener.filter(record("aiokafka.consumer.group_coordinator", template, 1))
        clock.now += 10.0
        summary = record("aiokafka.consumer.group_coordinator", template, "e")
        assert dampener.filter(summary)
        assert summary.__dict__["repeats_suppressed"] == 40
        assert summary.__dict__["repeats_window_s"] == 30.0
        clock.now += 1.0
        assert not dampener.filter(record("aiokafka.consumer.group_coordinator", template, "e"))

    def test_templates_and_loggers_are_counted_apart(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        assert dampener.filter(record("aiokafka.conn", "one %s", 1))
        assert dampener.filter(record("aiokafka.conn", "two %s", 1))
        assert dampener.filter(record("aiokafka.client", "one %s", 1))
        assert not dampener.filter(record("aiokafka.conn", "one %s", 2))

    def test_other_loggers_are_never_dampened(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        for name in ("regionstore_shared.apply", "aiokafkax", "uvicorn.error"):
            assert all(dampener.filter(record(name, "same %s", i)) for i in range(5))

    def test_our_retry_loops_are_dampened_too(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        name = "regionstore_shared.status_events"
        assert dampener.filter(record(name, "status listener reconnecting", level=logging.WARNING))
        assert not dampener.filter(
            record(name, "status listener reconnecting", level=logging.WARNING)
        )

    def test_kafka_connection_errors_become_one_outage(
        self, clock: FakeClock, lines: Lines
    ) -> None:
        tracker = outages(clock)
        dampener = RepeatFilter(every_s=30.0, clock=clock, outages=tracker)
        passed = [
            dampener.filter(
                record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
            )
            for _ in range(1600)
        ]
        assert not any(passed)  # the outage logs for them
        assert lines.messages() == ["kafka down"]
        assert "Unable connect to node with id 1: refused" in lines.records[0].__dict__["error"]
        tracker.ok("kafka")
        assert lines.messages() == ["kafka down", "kafka back"]
        assert lines.records[1].__dict__["failures"] == 1600

    def test_without_outages_kafka_connection_errors_are_dampened(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        passed = [dampener.filter(record("aiokafka", "Unable connect to %s", i)) for i in range(9)]
        assert passed == [True] + [False] * 8

    def test_forgets_old_templates_when_there_are_too_many(self, clock: FakeClock) -> None:
        dampener = RepeatFilter(every_s=30.0, clock=clock)
        dampener.max_templates = 4
        for i in range(4):
            assert dampener.filter(record("aiokafka", f"formatted message {i}"))
        clock.now += 31.0
        assert dampener.filter(record("aiokafka", "formatted message 4"))
        assert dampener.filter(record("aiokafka", "formatted message 0"))
        assert not dampener.filter(record("aiokafka", "formatted message 4"))


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("aiokafka", "pymongo", "uvicorn.access")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("root_logging")
class TestConfigureLogging:
    def test_a_kafka_outage_writes_a_handful_of_lines(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        tracker = Outages()
        configure_logging("writer", "INFO", outages=tracker)
        for i in range(1600):
            logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, i)
            logging.getLogger("aiokafka.consumer.group_coordinator").error(
                "Group Coordinator Request failed: %s", i
            )
        tracker.ok("kafka")
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(o["logger"], o["message"]) for o in out] == [
            ("regionstore_shared.logs", "kafka down"),
            ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: 0"),
            ("regionstore_shared.logs", "kafka back"),
        ]
        assert {o["service"] for o in out} == {"writer"}

    def test_without_outages_kafka_lines_are_rate_limited(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("gateway", "INFO")
        for i in range(1600):
            logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, i)
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [o["message"] for o in out] == ["Unable connect to node with id 1: 0"]

    def test_timestamps_are_rfc_3339_in_utc(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("gateway", "INFO")
        before = datetime.now(UTC).replace(microsecond=0)
        logging.getLogger("regionstore_gateway").info("something happened")
        after = datetime.now(UTC)
        (line,) = capsys.readouterr().out.splitlines()
        ts = json.loads(line)["ts"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
        at = datetime.fromisoformat(ts)
        assert at.utcoffset() == timedelta(0)
        assert before <= at <= after
