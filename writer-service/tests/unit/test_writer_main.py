"""The writer applies each command's home-region upsert, and parks it when that region is down."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from regionstore_shared import command_consumer as service
from regionstore_shared.documents import DELETED, VERSION
from regionstore_shared.pipeline import PartitionOwnership
from regionstore_shared.schemas import Applier, decode_command
from regionstore_shared.status import NodeStatus
from regionstore_writer import main
from regionstore_writer.settings import WriterSettings
from shared.tests.fakes import COMMANDS, ConsumerRig, Record, command_record, upsert
from shared.tests.service_checks import main_consumer_call


def created(customer_id: str, offset: int, zip_prefix: int = 14409) -> Record:
    """A new customer homed by its zip (14409: region_1, replica region_3; 44409: region_2,
    replica region_1), at version ``offset + 1``."""
    return command_record(upsert(customer_id, offset + 1, zip_prefix), offset, COMMANDS)


def run_writer(monkeypatch: pytest.MonkeyPatch, *polls: list[Record]) -> ConsumerRig:
    rig = ConsumerRig(monkeypatch, list(polls))
    monkeypatch.setattr(main, "run_service", rig.run_service)
    main.main()
    return rig


def test_main_consumes_as_the_home_role_in_the_writer_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call, state = main_consumer_call(monkeypatch, main)
    assert isinstance(call["settings"], WriterSettings)
    assert call["role"] is Applier.WRITER
    assert call["group_id"] == "regionstore.writer"
    assert call["state"] is state


class TestWiring:
    def test_writes_the_home_region_only_then_commits_with_the_table(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_writer(monkeypatch, [created("c1", 0), created("c2", 1)])
        assert set(rig.stores["region_1"].docs) == {"c1", "c2"}
        assert rig.stores["region_1"].docs["c1"][DELETED] is False
        assert rig.stores["region_1"].docs["c2"][VERSION] == 2
        assert rig.stores["region_3"].writes == []
        assert rig.stores["region_2"].writes == []
        assert rig.tables.commits == [{COMMANDS: 2}]
        assert rig.consumer is not None
        assert rig.consumer.commits == []  # the offsets went with the table, in one transaction
        assert rig.producer.queued == []

    def test_a_move_writes_the_new_home_and_leaves_the_tombstones_to_the_replicator(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_writer(monkeypatch, [created("c1", 0)], [created("c1", 1, zip_prefix=44409)])
        assert rig.stores["region_1"].docs["c1"][VERSION] == 1
        assert rig.stores["region_1"].docs["c1"][DELETED] is False
        assert rig.stores["region_2"].docs["c1"][VERSION] == 2
        assert rig.stores["region_3"].writes == []

    def test_reads_the_command_topic_in_the_writer_group(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_writer(monkeypatch, [created("c1", 0)])
        (subscription,) = rig.subscriptions
        assert subscription["topics"] == ("customers.commands",)
        assert subscription["group_id"] == "regionstore.writer"
        assert subscription["client_id"] == "writer"
        assert isinstance(subscription["listener"], PartitionOwnership)
        assert rig.clients_for == ["writer"]
        assert rig.topics_ensured == 1
        assert rig.copartitioned == [("customers.commands", "regionstore.writer.placement")]
        assert rig.tables.fenced == [COMMANDS.partition]

    def test_is_ready_before_it_consumes_and_stops_its_consumer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_writer(monkeypatch, [created("c1", 0)])
        assert rig.ready_at_first_poll is True
        assert rig.state.details["indexes"] == dict.fromkeys(rig.stores, "ensured")
        assert rig.consumer is not None
        assert rig.consumer.started
        assert rig.consumer.stopped
        assert rig.tables.writers[COMMANDS.partition].closed

    def test_a_home_region_marked_unavailable_is_parked_in_its_pending_topic(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record = created("c1", 0)
        rig = ConsumerRig(monkeypatch, [[record]])
        rig.redis.mark("region_1", NodeStatus.UNAVAILABLE)
        monkeypatch.setattr(main, "run_service", rig.run_service)
        main.main()
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_1"
        # The command as routed: at its effective version, its place in the partition with it.
        assert decode_command(parked["value"]) == decode_command(record.value).model_copy(
            update={"position": record.offset}
        )
        assert dict(parked["headers"])["regionstore-park-reason"] == b"marked_unavailable"
        assert rig.stores["region_1"].writes == []
        assert rig.tables.commits == [{COMMANDS: 1}]  # parked is handled: committed

    def test_a_store_that_fails_is_parked_not_retried(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = ConsumerRig(monkeypatch, [[created("c1", 0)]])
        rig.stores["region_1"].fail_with = AutoReconnect("connection refused")
        monkeypatch.setattr(main, "run_service", rig.run_service)
        main.main()
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_1"
        assert dict(parked["headers"])["regionstore-park-reason"] == b"write_failed"
        assert len(rig.stores["region_1"].writes) == 1
        assert rig.tables.commits == [{COMMANDS: 1}]


def test_a_consumer_whose_start_fails_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = ConsumerRig(monkeypatch, [])
    made = rig._kafka_consumer

    def failing_start(*args: Any, **kwargs: Any) -> Any:
        consumer = made(*args, **kwargs)

        async def start() -> None:
            raise ConnectionError("bootstrap went away")

        consumer.start = start  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(service, "kafka_consumer", failing_start)
    monkeypatch.setattr(main, "run_service", rig.run_service)
    with pytest.raises(ConnectionError):
        main.main()
    assert rig.consumer is not None
    assert rig.consumer.stopped


def test_the_dead_letter_counters_exist_before_any_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Their own topic name: no other test can have made these series.
    monkeypatch.setenv("REGIONSTORE_KAFKA__COMMAND_TOPIC", "commands.expecting-dead-letters")
    run_writer(monkeypatch, [created("c1", 0)])
    samples = {
        region: REGISTRY.get_sample_value(
            "regionstore_commands_deadlettered_total",
            {"source_topic": "commands.expecting-dead-letters", "region": region},
        )
        for region in ("", "region_1", "region_2", "region_3")
    }
    assert samples == dict.fromkeys(samples, 0.0)


def test_batches_act_on_the_statuses_the_listener_read_not_one_redis_read_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = ConsumerRig(monkeypatch, [[created(f"c{i}", i)] for i in range(8)])
    reads: list[list[str]] = []
    read = rig.redis.mget

    async def mget(keys: list[str]) -> list[str | None]:
        reads.append(keys)
        return await read(keys)

    monkeypatch.setattr(rig.redis, "mget", mget)
    monkeypatch.setattr(main, "run_service", rig.run_service)
    main.main()
    assert len(rig.stores["region_1"].docs) == 8
    # The listener's read when it subscribed, and at most one batch's before that.
    assert len(reads) <= 2
