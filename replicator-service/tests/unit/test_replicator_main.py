"""The replicator applies each command's replicas and tombstones, and parks them when a region is
down."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect

from regionstore_replicator import main
from regionstore_replicator.settings import ReplicatorSettings
from regionstore_shared.documents import DELETED, VERSION
from regionstore_shared.domain import delete_command
from regionstore_shared.pipeline import PartitionOwnership
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.schemas import Applier, Command, decode_command
from regionstore_shared.status import NodeStatus
from shared.tests.fakes import COMMANDS, ConsumerRig, Record, command_record, upsert
from shared.tests.service_checks import main_consumer_call


def written(command: Command, offset: int) -> Record:
    return command_record(command, offset, COMMANDS)


def run_replicator(rig: ConsumerRig, monkeypatch: pytest.MonkeyPatch) -> ConsumerRig:
    monkeypatch.setattr(main, "run_service", rig.run_service)
    main.main()
    return rig


def test_main_consumes_as_the_replica_role_in_the_replicator_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call, state = main_consumer_call(monkeypatch, main)
    assert isinstance(call["settings"], ReplicatorSettings)
    assert call["role"] is Applier.REPLICATOR
    assert call["group_id"] == "regionstore.replicator"
    assert call["state"] is state


class TestWiring:
    def test_writes_the_replica_region_only_then_commits_with_the_table(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # 14409 is homed in region_1, replica region_3: region_2 is never written, not even
        # with a tombstone, since the customer never lived there.
        polls = [[written(upsert("c1", 5), 0)], [written(upsert("c2", 6), 1)]]
        rig = run_replicator(ConsumerRig(monkeypatch, polls), monkeypatch)
        assert set(rig.stores["region_3"].docs) == {"c1", "c2"}
        assert rig.stores["region_3"].docs["c2"][DELETED] is False
        assert rig.stores["region_3"].docs["c2"][VERSION] == 6
        assert rig.stores["region_1"].writes == []
        assert rig.stores["region_2"].writes == []
        # Both batches came within one commit interval: one commit for both.
        assert rig.tables.commits == [{COMMANDS: 2}]
        assert rig.consumer is not None
        assert rig.consumer.commits == []
        assert rig.producer.queued == []

    def test_a_move_tombstones_only_the_region_the_customer_left(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # From region_1 (replica region_3) to region_2 (replica region_1): region_3 is left.
        polls = [[written(upsert("c1", 1), 0)], [written(upsert("c1", 2, 44409), 1)]]
        rig = run_replicator(ConsumerRig(monkeypatch, polls), monkeypatch)
        assert rig.stores["region_3"].docs["c1"][DELETED] is True
        assert rig.stores["region_3"].docs["c1"][VERSION] == 2
        assert rig.stores["region_1"].docs["c1"][DELETED] is False
        assert rig.stores["region_2"].writes == []

    def test_a_delete_tombstones_the_placement_writer_share_included(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        delete = delete_command("c1", regions=RegionMap(DEFAULT_REGIONS), version=2, issued_at_ms=0)
        polls = [[written(upsert("c1", 1), 0), written(delete, 1)]]
        rig = run_replicator(ConsumerRig(monkeypatch, polls), monkeypatch)
        for region in ("region_1", "region_3"):
            assert rig.stores[region].docs["c1"][DELETED] is True
            assert rig.stores[region].docs["c1"][VERSION] == 2
        assert rig.stores["region_2"].writes == []

    def test_reads_the_command_topic_in_the_replicator_group(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_replicator(ConsumerRig(monkeypatch, [[written(upsert("c1", 5), 0)]]), monkeypatch)
        (subscription,) = rig.subscriptions
        assert subscription["topics"] == ("customers.commands",)
        assert subscription["group_id"] == "regionstore.replicator"
        assert subscription["client_id"] == "replicator"
        assert isinstance(subscription["listener"], PartitionOwnership)
        assert rig.clients_for == ["replicator"]
        assert rig.copartitioned == [("customers.commands", "regionstore.replicator.placement")]
        assert rig.ready_at_first_poll is True
        assert rig.consumer is not None
        assert rig.consumer.stopped

    def test_a_replica_region_marked_unavailable_is_parked(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record = written(upsert("c1", 5), 0)
        rig = ConsumerRig(monkeypatch, [[record]])
        rig.redis.mark("region_3", NodeStatus.UNAVAILABLE)
        run_replicator(rig, monkeypatch)
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_3"
        # The command as routed: at its effective version, its place in the partition with it.
        assert decode_command(parked["value"]) == decode_command(record.value).model_copy(
            update={"position": record.offset}
        )
        assert dict(parked["headers"])["regionstore-park-reason"] == b"marked_unavailable"
        assert rig.stores["region_3"].writes == []
        assert rig.tables.commits == [{COMMANDS: 1}]

    def test_a_replica_store_that_fails_is_parked_and_the_other_written(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        delete = delete_command("c1", regions=RegionMap(DEFAULT_REGIONS), version=2, issued_at_ms=0)
        rig = ConsumerRig(monkeypatch, [[written(upsert("c1", 1), 0)], [written(delete, 1)]])
        rig.stores["region_1"].fail_with = AutoReconnect("connection refused")
        run_replicator(rig, monkeypatch)
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_1"
        assert dict(parked["headers"])["regionstore-park-reason"] == b"write_failed"
        assert rig.stores["region_3"].docs["c1"][DELETED] is True
        # Both batches came within one commit interval: one commit for both.
        assert rig.tables.commits == [{COMMANDS: 2}]
