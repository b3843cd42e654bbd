"""``regionstore dlq`` against an in-memory dead-letter log: dead letters made by the consumers'
own ``DeadLetters``, read, shown and redriven."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from typer.testing import CliRunner, Result

from regionstore_shared.apply import Envelope, Rejected
from regionstore_shared.domain import upsert_command
from regionstore_shared.pipeline import DeadLetters
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.schemas import Command, Customer, decode_command, encode_command
from regionstore_tools.cli import app
from regionstore_tools.dlq import DeadLetter, Redrive
from shared.tests.fakes import FakeProducer

runner = CliRunner()
TOPIC = "customers.deadletter"
REGIONS = RegionMap(DEFAULT_REGIONS)


def command(customer_id: str = "c1", zip_prefix: int = 45000, version: int = 7) -> Command:
    customer = Customer(
        customer_id=customer_id,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_prefix,
        customer_city="salvador",
        customer_state="BA",
    )
    return upsert_command(customer, regions=REGIONS, version=version, issued_at_ms=1)


class Log:
    """The dead-letter, redrive and command topics in memory."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.recorded: list[Redrive] = []
        self.published: list[tuple[Command, str]] = []

    async def take(self, producer: FakeProducer) -> None:
        """Every message ``producer`` sent, as dead letters of partition 0."""
        for message in producer.sent:
            self.letters.append(
                DeadLetter(
                    partition=0,
                    offset=len(self.letters),
                    timestamp_ms=1_780_000_000_000,
                    key=message["key"],
                    value=message["value"],
                    headers=tuple(message["headers"]),
                )
            )
        producer.sent.clear()

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.letters)

    async def redrives(self) -> dict[str, Redrive]:
        return {redrive.dead_letter: redrive for redrive in self.recorded}

    async def publish(self, command: Command, letter: DeadLetter) -> str:
        self.published.append((command, letter.id))
        return f"3:{100 + len(self.published)}"

    async def record(self, redrive: Redrive) -> None:
        self.recorded.append(redrive)


async def refused(log: Log, *commands: Command, region: str = "region_2") -> None:
    producer = FakeProducer()
    rejected = [
        Rejected(Envelope(c, encode_command(c), "customers.commands"), "121: Document failed")
        for c in commands
    ]
    await DeadLetters(producer, TOPIC).send_commands(region, rejected)  # type: ignore[arg-type]
    await log.take(producer)


async def undecodable(log: Log, value: bytes = b"{not json") -> None:
    producer = FakeProducer()
    record = ConsumerRecord(
        topic="customers.commands",
        partition=4,
        offset=99,
        timestamp=0,
        timestamp_type=0,
        key=b"poison",
        value=value,
        checksum=None,
        serialized_key_size=6,
        serialized_value_size=len(value),
        headers=(),
    )
    await DeadLetters(producer, TOPIC).send(record, "invalid command: 1 validation error")  # type: ignore[arg-type]
    await log.take(producer)


def dlq(log: Log, *args: str) -> Result:
    return runner.invoke(app, ["dlq", *args], obj=log, env={"COLUMNS": "250"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr.removeprefix("error: ").strip()


@pytest.fixture
async def log() -> Log:
    log = Log()
    await refused(log, command("c1"), command("c2"))
    await undecodable(log)
    return log


class TestList:
    def test_every_dead_letter_with_its_kind_region_and_reason(self, log: Log) -> None:
        listed = as_json(dlq(log, "list", "--json"))
        assert [(e["id"], e["kind"], e["region"], e["customer_id"]) for e in listed] == [
            ("0:0", "refused", "region_2", "c1"),
            ("0:1", "refused", "region_2", "c2"),
            ("0:2", "undecodable", None, "poison"),
        ]
        assert listed[0]["error"] == "121: Document failed"
        assert listed[0]["command_id"] == str(
            decode_command(log.letters[0].value or b"").command_id
        )
        assert listed[2]["error"].startswith("invalid command")
        assert all(e["redriven"] is None for e in listed)

    def test_one_aligned_line_per_dead_letter(self, log: Log) -> None:
        result = dlq(log, "list")
        assert result.exit_code == 0, result.output
        head, *lines = result.stdout.splitlines()
        assert head.split()[:3] == ["ID", "AT", "(UTC)"]
        assert [line.split()[0] for line in lines] == ["0:0", "0:1", "0:2"]
        assert [line.split()[3:5] for line in lines] == [
            ["refused", "region_2"],
            ["refused", "region_2"],
            ["undecodable", "-"],
        ]
        assert lines[0].index("121: Document failed") == head.index("ERROR")

    def test_open_leaves_out_what_was_redriven(self, log: Log) -> None:
        assert dlq(log, "redrive", "0:1").exit_code == 0
        listed = as_json(dlq(log, "list", "--json", "--open"))
        assert [e["id"] for e in listed] == ["0:0", "0:2"]
        everything = as_json(dlq(log, "list", "--json"))
        assert everything[1]["redriven"]["published_as"] == "3:101"

    def test_none_at_all_says_so(self) -> None:
        result = dlq(Log(), "list")
        assert result.exit_code == 0
        assert result.stdout.strip() == "No dead letters."


class TestShow:
    def test_a_refused_command_in_full(self, log: Log) -> None:
        shown = as_json(dlq(log, "show", "0:1", "--json"))
        assert shown["command"]["customer"]["customer_id"] == "c2"
        assert shown["headers"]["regionstore-region"] == "region_2"
        assert "message" not in shown

    def test_an_undecodable_message_shows_its_bytes(self, log: Log) -> None:
        shown = as_json(dlq(log, "show", "0:2", "--json"))
        assert (shown["command"], shown["message"]) == (None, "{not json")
        assert shown["headers"]["regionstore-source-offset"] == "99"

    def test_the_text_says_what_a_redrive_would_publish(self, log: Log) -> None:
        result = dlq(log, "show", "0:0")
        assert result.exit_code == 0, result.output
        assert "redrive publishes it again" in result.stdout
        assert '"customer_id": "c1"' in result.stdout

    @pytest.mark.parametrize(
        ("ident", "says"),
        [("0:9", "no dead letter 0:9"), ("nine", "is not a dead letter id"), ("0:", "is not")],
    )
    def test_an_unknown_id_is_one_line(self, log: Log, ident: str, says: str) -> None:
        assert says in one_line_error(dlq(log, "show", ident))


class TestRedrive:
    def test_publishes_the_original_command_republished_and_records_it(self, log: Log) -> None:
        done = as_json(dlq(log, "redrive", "0:0", "--json"))
        original = decode_command(log.letters[0].value or b"")
        assert log.published == [(original, "0:0")]
        (redrive,) = log.recorded
        assert (redrive.dead_letter, redrive.command_id) == ("0:0", str(original.command_id))
        assert done["redriven"][0]["published_as"] == "3:101"
        assert "@" in redrive.by

    def test_an_undecodable_message_is_refused_and_nothing_is_published(self, log: Log) -> None:
        error = one_line_error(dlq(log, "redrive", "0:2"))
        assert "0:2 is not a command" in error
        assert "invalid command" in error
        assert (log.published, log.recorded) == ([], [])

    def test_a_dead_letter_redriven_already_needs_again(self, log: Log) -> None:
        assert dlq(log, "redrive", "0:0").exit_code == 0
        assert "add --again" in one_line_error(dlq(log, "redrive", "0:0"))
        assert dlq(log, "redrive", "0:0", "--again").exit_code == 0
        assert [letter for _, letter in log.published] == ["0:0", "0:0"]

    def test_all_redrives_every_open_command_once_and_skips_what_is_no_command(
        self, log: Log
    ) -> None:
        assert dlq(log, "redrive", "0:1").exit_code == 0
        done = as_json(dlq(log, "redrive", "--all", "--json"))
        assert [r["dead_letter"] for r in done["redriven"]] == ["0:0"]
        assert done["skipped"] == [{"id": "0:2", "reason": "not a command: it did not decode"}]
        assert [letter for _, letter in log.published] == ["0:1", "0:0"]

    def test_all_publishes_a_command_two_regions_refused_once(self) -> None:
        log = Log()
        twice = command("c3", zip_prefix=1310)

        async def by_two_regions() -> None:
            await refused(log, twice, region="region_1")
            await refused(log, twice, region="region_3")

        asyncio.run(by_two_regions())
        result = dlq(log, "redrive", "--all")
        assert result.exit_code == 0, result.output
        assert len(log.published) == 1
        assert [r.dead_letter for r in log.recorded] == ["0:0", "0:1"]
        assert {r.published_as for r in log.recorded} == {"3:101"}
        assert "redrove 2, skipped 0" in result.stdout

    @pytest.mark.parametrize("args", [[], ["0:0", "--all"]])
    def test_needs_one_id_or_all(self, log: Log, args: list[str]) -> None:
        assert "or pass --all" in one_line_error(dlq(log, "redrive", *args))
        assert log.published == []


def test_a_republished_command_reads_back_as_republished_and_unchanged() -> None:
    original = command()
    again = decode_command(encode_command(original.model_copy(update={"republished": True})))
    assert again.republished
    assert again.model_copy(update={"republished": False}) == original
    assert b"republished" not in encode_command(original)
