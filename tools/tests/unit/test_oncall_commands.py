"""The on-call commands (pending, audit-log, keys) over fake sources: no Kafka, no Redis."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from typer.testing import CliRunner, Result

from regionstore_gateway.adapters.audit_trail import AuditAction, AuditEvent, new_event
from regionstore_gateway.auth.apikeys import KeyHasher, KeyRecord
from regionstore_gateway.auth.roles import Principal, Role
from regionstore_shared.parked import ParkedBacklog, ParkedCommand
from regionstore_tools.audit_log import fold, parse_since
from regionstore_tools.cli import app
from regionstore_tools.gateway import ToolError
from regionstore_tools.pending_view import age
from regionstore_tools.sources import KeyTools, Sources

runner = CliRunner()
NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
OPS = Principal("c27e00112233", Role.OPERATOR, "on-call laptop")
LOADER = Principal("ab12cd34ef56", Role.WRITER)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default settings: no REGIONSTORE_* of the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RUN_DIR", str(tmp_path))


def invoke(sources: Sources, *args: str) -> Result:
    return runner.invoke(app, list(args), obj=sources, env={"COLUMNS": "200"})


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr.removeprefix("error: ").strip()


# pending


class FakeParked:
    def __init__(self, backlog: ParkedBacklog | Exception) -> None:
        self.backlog = backlog
        self.asked: list[tuple[str, int]] = []

    async def read(self, region: str, *, sample: int) -> ParkedBacklog:
        self.asked.append((region, sample))
        if isinstance(self.backlog, Exception):
            raise self.backlog
        return self.backlog

    def sources(self) -> Sources:
        @asynccontextmanager
        async def opened(_: Any) -> AsyncIterator[FakeParked]:
            yield self

        return Sources(parked=opened)


def parked_at(minutes_ago: float) -> int:
    return int((datetime.now(UTC) - timedelta(minutes=minutes_ago)).timestamp() * 1000)


def backlog(count: int = 1204) -> ParkedBacklog:
    oldest = parked_at(12.5)
    sample = [
        ParkedCommand(2, 40, oldest, "06b8999e2fba1a1fbc88172c00ba8bc7", "upsert", "unavailable"),
        ParkedCommand(0, 7, parked_at(3), "4e7b3e00288586ebd08712fdd0374a03", "delete", None),
    ]
    return ParkedBacklog("region_2", "pending.region_2", count, oldest, sample)


class TestPending:
    def test_the_count_the_oldest_age_and_the_oldest_customers(self) -> None:
        parked = FakeParked(backlog())
        result = invoke(parked.sources(), "pending", "region_2", "--sample", "2")
        assert result.exit_code == 0, result.output
        assert parked.asked == [("region_2", 2)]
        first = result.stdout.splitlines()[0]
        assert first.startswith("region_2: 1,204 parked commands in pending.region_2;")
        assert "the oldest has waited 12 min" in first
        assert "06b8999e2fba1a1fbc88172c00ba8bc7" in result.stdout
        assert "4e7b3e00288586ebd08712fdd0374a03" in result.stdout
        assert "2:40" in result.stdout

    def test_json(self) -> None:
        result = invoke(FakeParked(backlog()).sources(), "pending", "region_2", "--json")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert (body["region"], body["pending"], body["topic"]) == (
            "region_2",
            1204,
            "pending.region_2",
        )
        assert 12.5 * 60 <= body["oldest_age_s"] < 13.5 * 60
        assert body["oldest_parked_at"].endswith("Z")
        assert [c["customer_id"] for c in body["sample"]] == [
            "06b8999e2fba1a1fbc88172c00ba8bc7",
            "4e7b3e00288586ebd08712fdd0374a03",
        ]
        assert body["sample"][0] | {"parked_at": None, "age_s": None} == {
            "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
            "kind": "upsert",
            "parked_at": None,
            "age_s": None,
            "reason": "unavailable",
            "partition": 2,
            "offset": 40,
        }

    def test_nothing_parked(self) -> None:
        empty = ParkedBacklog("region_1", "pending.region_1", 0, None, [])
        result = invoke(FakeParked(empty).sources(), "pending", "region_1")
        assert result.stdout.strip() == "region_1: nothing parked in pending.region_1"
        json_result = invoke(FakeParked(empty).sources(), "pending", "region_1", "--json")
        assert json.loads(json_result.stdout)["oldest_age_s"] is None

    def test_an_unknown_region_is_one_line_and_nothing_is_read(self) -> None:
        parked = FakeParked(backlog())
        result = invoke(parked.sources(), "pending", "region_9")
        assert one_line_error(result) == (
            "no region 'region_9': the regions are region_1, region_2, region_3"
        )
        assert result.exit_code == 2
        assert parked.asked == []

    def test_kafka_down_is_one_line(self) -> None:
        parked = FakeParked(KafkaConnectionError("Unable to bootstrap from 127.0.0.1:9092"))
        result = invoke(parked.sources(), "pending", "region_2")
        assert one_line_error(result).startswith("Kafka did not answer: KafkaConnectionError")
        assert result.exit_code == 1


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"), (3660, "1 h 1 min"),
     (90000, "1 d 1 h")],
)  # fmt: skip
def test_ages_read_as_people_say_them(seconds: float, shown: str) -> None:
    assert age(seconds) == shown


# audit-log


def status_event(region: str, status: str, minutes: int, actor: Principal = OPS) -> AuditEvent:
    event = new_event(actor, AuditAction.REGION_STATUS, region, {"status": status})
    return event.model_copy(update={"at": NOW + timedelta(minutes=minutes)})


def delete_event(minutes: int) -> AuditEvent:
    detail = {"command_id": str(uuid.UUID(int=7)), "version": 99}
    event = new_event(LOADER, AuditAction.CUSTOMER_DELETE, "06b8999e2fba1a1f", detail)
    return event.model_copy(update={"at": NOW + timedelta(minutes=minutes)})


class FakeAudit:
    def __init__(self, history: list[AuditEvent], live: list[list[AuditEvent]]) -> None:
        self.events = history
        self.live = live
        self.since: list[datetime] = []

    async def history(self, since: datetime) -> list[AuditEvent]:
        self.since.append(since)
        return self.events

    async def next_events(self) -> list[AuditEvent]:
        if not self.live:
            raise KeyboardInterrupt  # the operator's Ctrl-C
        return self.live.pop(0)

    def sources(self) -> Sources:
        @asynccontextmanager
        async def opened(_: Any) -> AsyncIterator[FakeAudit]:
            yield self

        return Sources(audit=opened)


def trail() -> list[AuditEvent]:
    off = status_event("region_2", "unavailable", 1)
    refused = status_event("region_2", "available", 2)
    unsure = status_event("region_3", "unavailable", 3, LOADER)
    return [
        off,
        delete_event(2),
        refused,
        unsure,
        refused.followed_by("failed", "OutOfMemoryError('OOM command not allowed')"),
        unsure.followed_by("unknown", "TimeoutError()"),
    ]


class TestAuditLog:
    def test_each_action_with_its_outcome_and_the_key_s_name(self) -> None:
        result = invoke(FakeAudit(trail(), []).sources(), "audit-log")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "2026-12-06T10:01:00.000Z  region_2 set unavailable  by on-call laptop "
            "(c27e00112233, operator)  done",
            "2026-12-06T10:02:00.000Z  customer 06b8999e2fba1a1f deleted (command "
            "00000000-0000-0000-0000-000000000007, version 99)  by ab12cd34ef56 (writer)  done",
            "2026-12-06T10:02:00.000Z  region_2 set available  by on-call laptop "
            "(c27e00112233, operator)  failed: OutOfMemoryError('OOM command not allowed')",
            "2026-12-06T10:03:00.000Z  region_3 set unavailable  by ab12cd34ef56 (writer)  "
            "unknown: TimeoutError()",
        ]

    def test_one_region_s_status_changes_and_the_newest_few(self) -> None:
        result = invoke(
            FakeAudit(trail(), []).sources(), "audit-log", "--region", "region_2", "--last", "1"
        )
        (line,) = result.stdout.splitlines()
        assert "region_2 set available" in line
        assert line.endswith("failed: OutOfMemoryError('OOM command not allowed')")

    def test_json_lines_carry_the_outcome(self) -> None:
        result = invoke(FakeAudit(trail(), []).sources(), "audit-log", "--json")
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(e["action"], e["outcome"]) for e in lines] == [
            ("region.status", "done"),
            ("customer.delete", "done"),
            ("region.status", "failed"),
            ("region.status", "unknown"),
        ]
        assert lines[0]["key_name"] == "on-call laptop"
        assert lines[2]["error"] == "OutOfMemoryError('OOM command not allowed')"
        assert "follows" not in lines[2]

    def test_follow_prints_new_events_and_late_follow_ups_until_ctrl_c(self) -> None:
        late = status_event("region_1", "unavailable", 10)
        failed = late.followed_by("failed", "RedisError()")
        failed = failed.model_copy(update={"at": NOW + timedelta(minutes=10, seconds=1)})
        audit = FakeAudit(trail()[:1], [[late], [], [delete_event(11), failed]])
        result = invoke(audit.sources(), "audit-log", "--follow", "--region", "region_1")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "2026-12-06T10:10:00.000Z  region_1 set unavailable  by on-call laptop "
            "(c27e00112233, operator)",
            "2026-12-06T10:10:01.000Z  region_1 set unavailable  by on-call laptop "
            f"(c27e00112233, operator)  failed: RedisError() (follows {late.event_id})",
        ]

    def test_a_bad_since_is_one_line(self) -> None:
        audit = FakeAudit([], [])
        result = invoke(audit.sources(), "audit-log", "--since", "yesterday")
        assert "--since 'yesterday'" in one_line_error(result)
        assert result.exit_code == 2
        assert audit.since == []

    def test_since_is_passed_as_a_time(self) -> None:
        audit = FakeAudit([], [])
        result = invoke(audit.sources(), "audit-log", "--since", "2026-12-01T00:00:00Z")
        assert result.exit_code == 0, result.output
        assert audit.since == [datetime(2026, 12, 1, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-12-05T08:00:00+01:00", datetime(2026, 12, 5, 7, tzinfo=UTC)),
        ("2026-12-05T08:00:00", datetime(2026, 12, 5, 8, tzinfo=UTC)),
    ],
)
def test_since_takes_a_duration_or_a_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_since_refuses_anything_else() -> None:
    with pytest.raises(ToolError):
        parse_since("last week", NOW)


def test_a_follow_up_of_an_action_before_the_window_is_its_own_entry() -> None:
    earlier = status_event("region_1", "unavailable", 0)
    (entry,) = fold([earlier.followed_by("unknown", "TimeoutError()")])
    assert (entry.outcome, entry.error) == ("unknown", "TimeoutError()")


# keys

HASHER = KeyHasher("unit-tests-server-secret-0123456789abcdef")


class FakeKeys:
    def __init__(self, *, hasher: KeyHasher | None = HASHER, down: bool = False) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.hasher = hasher
        self.down = down

    async def all(self) -> list[KeyRecord]:
        self._check()
        return sorted(self.records.values(), key=lambda r: r.key_id)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        self._check()
        record = self.records.get(key_id)
        if record is not None:
            record = self.records[key_id] = replace(record, revoked_at="2026-12-06T10:00:00+00:00")
        return record

    async def issue(
        self,
        hasher: KeyHasher,
        role: Role,
        *,
        name: str = "",
        rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[str, KeyRecord]:
        self._check()
        key_id = f"{len(self.records):012x}"
        secret = "s" * 43
        record = KeyRecord(
            key_id, role, hasher.digest(secret), name, "2026-12-06T09:00:00+00:00", rate, burst
        )
        self.records[key_id] = record
        return f"rsk_{key_id}_{secret}", record

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    def sources(self) -> Sources:
        @asynccontextmanager
        async def opened(_: Any) -> AsyncIterator[KeyTools]:
            yield KeyTools(self, self.hasher)

        return Sources(keys=opened)


class TestKeys:
    def test_create_prints_the_key_once_on_stdout(self) -> None:
        keys = FakeKeys()
        result = invoke(keys.sources(), "keys", "create", "--role", "reader", "--name", "grafana")
        assert result.exit_code == 0, result.output
        (record,) = keys.records.values()
        assert (record.role, record.name) == (Role.READER, "grafana")
        assert result.stdout.strip() == f"rsk_{record.key_id}_{'s' * 43}"
        assert f"key id: {record.key_id}  role: reader" in result.stderr

    def test_create_json_has_the_key_and_never_the_digest(self) -> None:
        keys = FakeKeys()
        args = ("keys", "create", "--role", "writer", "--rate", "50", "--burst", "10", "--json")
        result = invoke(keys.sources(), *args)
        body = json.loads(result.stdout)
        (record,) = keys.records.values()
        assert body["key"].startswith(f"rsk_{record.key_id}_")
        assert (body["role"], body["rate"], body["burst"]) == ("writer", 50.0, 10)
        assert record.digest not in result.stdout
        assert "digest" not in body

    def test_create_without_the_server_secret_is_one_line(self) -> None:
        keys = FakeKeys(hasher=None)
        result = invoke(keys.sources(), "keys", "create", "--role", "reader")
        assert "REGIONSTORE_AUTH__SECRET" in one_line_error(result)
        assert keys.records == {}

    def test_a_role_that_is_not_one_is_refused(self) -> None:
        result = invoke(FakeKeys().sources(), "keys", "create", "--role", "admin")
        assert result.exit_code == 2

    def test_list_and_revoke(self) -> None:
        keys = FakeKeys()
        invoke(keys.sources(), "keys", "create", "--role", "reader", "--name", "grafana")
        invoke(keys.sources(), "keys", "create", "--role", "operator", "--name", "ops")
        revoked = invoke(keys.sources(), "keys", "revoke", "000000000000")
        assert revoked.stdout.strip() == (
            "revoked 000000000000 (reader) at 2026-12-06T10:00:00+00:00"
        )
        listed = invoke(keys.sources(), "keys", "list")
        lines = listed.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["000000000000", "000000000001"]
        assert "revoked 2026-12-06T10:00:00+00:00" in lines[0]
        assert lines[1].endswith("ops")
        body = json.loads(invoke(keys.sources(), "keys", "list", "--json").stdout)
        assert [(k["key_id"], k["revoked_at"]) for k in body] == [
            ("000000000000", "2026-12-06T10:00:00+00:00"),
            ("000000000001", None),
        ]
        assert all("digest" not in k for k in body)

    def test_revoking_an_unknown_key_is_one_line(self) -> None:
        result = invoke(FakeKeys().sources(), "keys", "revoke", "0123456789ab")
        assert one_line_error(result) == "no key 0123456789ab"

    def test_redis_down_is_one_line(self) -> None:
        result = invoke(FakeKeys(down=True).sources(), "keys", "list")
        assert one_line_error(result).startswith("Redis did not answer: ConnectionError")
