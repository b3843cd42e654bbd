"""The replicator applies each command's replica targets, and parks them when a region is down."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect

from regionstore_replicator import main
from regionstore_replicator.settings import ReplicatorSettings
from regionstore_shared.documents import DELETED, VERSION
from regionstore_shared.pipeline import PartitionOwnership
from regionstore_shared.schemas import Applier
from regionstore_shared.status import NodeStatus
from shared.tests.fakes import COMMANDS, ConsumerRig, Record, command_record, tombstone
from shared.tests.service_checks import main_consumer_call


def home_1_replicas_2_3(customer_id: str, offset: int) -> Record:
    command = tombstone(
        customer_id,
        5,
        [
            ("region_1", Applier.WRITER),
            ("region_2", Applier.REPLICATOR),
            ("region_3", Applier.REPLICATOR),
        ],
    )
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
    def test_writes_the_replica_regions_only_then_commits(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        polls = [[home_1_replicas_2_3("c1", 0)], [home_1_replicas_2_3("c2", 1)]]
        rig = run_replicator(ConsumerRig(monkeypatch, polls), monkeypatch)
        for region in ("region_2", "region_3"):
            assert set(rig.stores[region].docs) == {"c1", "c2"}
            assert rig.stores[region].docs["c2"][DELETED] is True
            assert rig.stores[region].docs["c2"][VERSION] == 5
        assert rig.stores["region_1"].writes == []
        assert rig.consumer is not None
        assert rig.consumer.commits == [{COMMANDS: 1}, {COMMANDS: 2}]
        assert rig.producer.queued == []

    def test_reads_the_command_topic_in_the_replicator_group(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rig = run_replicator(
            ConsumerRig(monkeypatch, [[home_1_replicas_2_3("c1", 0)]]), monkeypatch
        )
        (subscription,) = rig.subscriptions
        assert subscription["topics"] == ("customers.commands",)
        assert subscription["group_id"] == "regionstore.replicator"
        assert subscription["client_id"] == "replicator"
        assert isinstance(subscription["listener"], PartitionOwnership)
        assert rig.clients_for == ["replicator"]
        assert rig.ready_at_first_poll is True
        assert rig.consumer is not None
        assert rig.consumer.stopped

    def test_a_replica_region_marked_unavailable_is_parked_and_the_other_written(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record = home_1_replicas_2_3("c1", 0)
        rig = ConsumerRig(monkeypatch, [[record]])
        rig.redis.mark("region_3", NodeStatus.UNAVAILABLE)
        run_replicator(rig, monkeypatch)
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_3"
        assert parked["value"] == record.value
        assert dict(parked["headers"])["regionstore-park-reason"] == b"marked_unavailable"
        assert set(rig.stores["region_2"].docs) == {"c1"}
        assert rig.stores["region_3"].writes == []
        assert rig.consumer is not None
        assert rig.consumer.commits == [{COMMANDS: 1}]

    def test_a_replica_store_that_fails_is_parked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        rig = ConsumerRig(monkeypatch, [[home_1_replicas_2_3("c1", 0)]])
        rig.stores["region_2"].fail_with = AutoReconnect("connection refused")
        run_replicator(rig, monkeypatch)
        (parked,) = rig.producer.sent
        assert parked["topic"] == "pending.region_2"
        assert dict(parked["headers"])["regionstore-park-reason"] == b"write_failed"
        assert set(rig.stores["region_3"].docs) == {"c1"}
        assert rig.consumer is not None
        assert rig.consumer.commits == [{COMMANDS: 1}]
