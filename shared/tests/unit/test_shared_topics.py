"""The topics the services create, how each one keeps its records, and how a topic made by an
earlier release is brought in line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource
from aiokafka.errors import PolicyViolationError, TopicAuthorizationFailedError

from regionstore_shared import topics
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import (
    _topic_config,
    all_topics,
    ensure_topics,
    placement_topics,
    retention_update,
    topic_settings,
)
from shared.tests.fakes import clear_environment

FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
STAMPED = {"message.timestamp.type": "LogAppendTime"}
STAMPED_OWN = ("LogAppendTime", True)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> CommonSettings:
    clear_environment(monkeypatch)
    return CommonSettings()


def test_the_writer_and_the_replicator_have_a_table_topic_each(settings: CommonSettings) -> None:
    assert placement_topics(settings) == [
        "regionstore.writer.placement",
        "regionstore.replicator.placement",
    ]
    assert set(placement_topics(settings)) <= set(all_topics(settings))


def test_a_table_topic_keeps_the_newest_entry_of_every_customer_forever(
    settings: CommonSettings,
) -> None:
    config = _topic_config(settings, "regionstore.writer.placement")
    assert config["cleanup.policy"] == "compact"
    assert config["retention.ms"] == config["retention.bytes"] == "-1"
    # Only closed segments are compacted: they must close.
    assert int(config["segment.ms"]) <= 3_600_000


def test_the_command_topic_is_not_compacted(settings: CommonSettings) -> None:
    assert "cleanup.policy" not in _topic_config(settings, settings.kafka.command_topic)


def test_a_pending_topic_keeps_every_parked_command(settings: CommonSettings) -> None:
    config = _topic_config(settings, settings.kafka.pending_topic("region_1"))
    assert config["retention.ms"] == config["retention.bytes"] == "-1"


def test_the_dead_letter_topic_keeps_its_records_forever(settings: CommonSettings) -> None:
    config = _topic_config(settings, settings.kafka.deadletter_topic)
    assert FOREVER.items() <= config.items()


def test_the_redrive_topic_keeps_one_entry_per_dead_letter_forever(
    settings: CommonSettings,
) -> None:
    assert settings.kafka.redrive_topic == "customers.deadletter.redriven"
    assert settings.kafka.redrive_topic in all_topics(settings)
    config = _topic_config(settings, settings.kafka.redrive_topic)
    assert config["cleanup.policy"] == "compact"
    assert config["retention.ms"] == config["retention.bytes"] == "-1"


def test_the_key_topic_loses_a_destroyed_key_within_the_bound(settings: CommonSettings) -> None:
    assert settings.kafka.key_topic in all_topics(settings)
    short = settings.model_copy(update={"erasure_within": timedelta(minutes=4)})
    config = _topic_config(short, settings.kafka.key_topic)
    assert config["cleanup.policy"] == "compact"
    assert config["retention.ms"] == "-1"
    # A segment closes, is cleaned, and its tombstones go, each within a quarter of the bound.
    assert int(config["segment.ms"]) + int(config["max.compaction.lag.ms"]) <= 120_000
    assert int(config["delete.retention.ms"]) <= 60_000
    assert config["message.timestamp.type"] == "LogAppendTime"


def test_the_key_topic_is_as_durable_as_the_command_topic(settings: CommonSettings) -> None:
    # A key lost is a customer erased, and a key not written refuses a write: the key topic
    # takes a broker's loss exactly as the commands do (replication factor 3, two in sync).
    three = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"replication_factor": 3})}
    )
    keys = _topic_config(three, three.kafka.key_topic)
    commands = _topic_config(three, three.kafka.command_topic)
    assert keys["min.insync.replicas"] == commands["min.insync.replicas"] == "2"


def test_a_key_topic_of_a_longer_bound_is_brought_in_line(settings: CommonSettings) -> None:
    current = {
        key: (value, True)
        for key, value in _topic_config(settings, settings.kafka.key_topic).items()
    }
    assert retention_update(settings, settings.kafka.key_topic, current) is None
    short = settings.model_copy(update={"erasure_within": timedelta(seconds=60)})
    update = retention_update(short, settings.kafka.key_topic, current)
    assert update is not None
    assert update["segment.ms"] == update["delete.retention.ms"] == "15000"


class TestRetentionUpdate:
    def test_a_dead_letter_topic_of_an_earlier_release_gets_unlimited_retention(
        self, settings: CommonSettings
    ) -> None:
        current = {
            "min.insync.replicas": ("1", True),
            "retention.ms": ("604800000", False),  # the broker's default, 7 days
            "retention.bytes": ("-1", False),
            "cleanup.policy": ("delete", False),
            "segment.bytes": ("1073741824", False),
        }
        update = retention_update(settings, settings.kafka.deadletter_topic, current)
        # AlterConfigs replaces what was set on the topic: min.insync.replicas is sent again.
        assert update == {"min.insync.replicas": "1", **FOREVER, **STAMPED}

    def test_a_topic_in_line_is_left_alone(self, settings: CommonSettings) -> None:
        current = {key: (value, True) for key, value in (FOREVER | STAMPED).items()}
        assert retention_update(settings, settings.kafka.deadletter_topic, current) is None

    def test_a_topic_whose_retention_is_not_ours_to_say_is_left_alone(
        self, settings: CommonSettings
    ) -> None:
        # An operator's retention on the command topic stands: regionstore names none.
        current = {"retention.ms": ("86400000", True), "message.timestamp.type": STAMPED_OWN}
        assert retention_update(settings, settings.kafka.command_topic, current) is None

    @pytest.mark.parametrize("topic", ["placement", "pending", "audit"])
    def test_a_topic_stamped_by_its_producers_clock_is_stamped_by_the_broker_from_now(
        self, settings: CommonSettings, topic: str
    ) -> None:
        # A producer whose clock is over an hour ahead has its CreateTime records refused.
        kafka = settings.kafka
        name = {
            "placement": kafka.placement_topic(kafka.writer_group),
            "pending": kafka.pending_topic("region_1"),
            "audit": kafka.audit_topic,
        }[topic]
        current = {key: (value, True) for key, value in _topic_config(settings, name).items()} | {
            "message.timestamp.type": ("CreateTime", False)
        }
        update = retention_update(settings, name, current)
        assert update is not None
        assert update["message.timestamp.type"] == "LogAppendTime"


class TestTopicSettings:
    def test_from_v1_only_values_set_on_the_topic_are_its_own(self) -> None:
        entries = [
            ("retention.ms", "-1", False, 1, False, []),  # DYNAMIC_TOPIC_CONFIG
            ("segment.bytes", "1073741824", False, 5, False, []),  # DEFAULT_CONFIG
            ("log.dirs", "/x", True, 4, False, []),  # STATIC_BROKER_CONFIG
            ("sasl.jaas.config", None, False, 1, True, []),  # sensitive: no value shown
        ]
        assert topic_settings(entries, legacy=False) == {
            "retention.ms": ("-1", True),
            "segment.bytes": ("1073741824", False),
            "log.dirs": ("/x", False),
        }

    def test_in_v0_a_value_that_is_not_a_default_is_the_topics(self) -> None:
        entries = [
            ("retention.ms", "-1", False, False, False),
            ("segment.bytes", "1073741824", False, True, False),
        ]
        assert topic_settings(entries, legacy=True) == {
            "retention.ms": ("-1", True),
            "segment.bytes": ("1073741824", False),
        }


@dataclass
class Broker:
    """Topics and the settings made on each; every request the admin client sent."""

    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    altered: list[dict[str, dict[str, str]]] = field(default_factory=list)
    refuse_describe: dict[str, int] = field(default_factory=dict)
    refuse_alter: dict[str, int] = field(default_factory=dict)


@dataclass
class Answer:
    resources: list[tuple[Any, ...]]
    API_VERSION: int = 2


@dataclass
class Created:
    topic_errors: list[tuple[str, int, str]]


class Admin:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_topics(self) -> list[str]:
        return list(self.broker.configs)

    async def create_topics(self, new: list[NewTopic]) -> Created:
        for topic in new:
            self.broker.configs[topic.name] = dict(topic.topic_configs)
            self.broker.created.append(topic.name)
        return Created([(topic.name, 0, "") for topic in new])

    async def describe_configs(self, resources: list[ConfigResource]) -> list[Answer]:
        described = []
        for resource in resources:
            own = self.broker.configs[resource.name]
            entries = [(k, v, False, 1, False, []) for k, v in own.items()]
            entries += [
                (k, v, False, 5, False, [])
                for k, v in {"retention.ms": "604800000", "cleanup.policy": "delete"}.items()
                if k not in own
            ]
            code = self.broker.refuse_describe.get(resource.name, 0)
            described.append((code, None, 2, resource.name, [] if code else entries))
        return [Answer(described)]

    async def alter_configs(self, resources: list[ConfigResource]) -> list[Answer]:
        self.broker.altered.append({r.name: dict(r.configs) for r in resources})
        for resource in resources:
            if resource.name not in self.broker.refuse_alter:
                self.broker.configs[resource.name] = dict(resource.configs)
        return [
            Answer(
                [(self.broker.refuse_alter.get(r.name, 0), None, 2, r.name) for r in resources],
                API_VERSION=1,
            )
        ]


class TestEnsureTopics:
    @pytest.fixture
    def broker(self, monkeypatch: pytest.MonkeyPatch) -> Broker:
        broker = Broker()
        monkeypatch.setattr(topics, "kafka_admin", lambda *_: Admin(broker))
        return broker

    async def test_creates_what_is_missing_and_mends_only_the_retention_that_differs(
        self, settings: CommonSettings, broker: Broker
    ) -> None:
        kafka = settings.kafka
        broker.configs = {
            kafka.command_topic: {"min.insync.replicas": "1"},
            kafka.deadletter_topic: {"min.insync.replicas": "1", "max.message.bytes": "2097152"},
        }
        await ensure_topics(settings)
        existing = {kafka.command_topic, kafka.deadletter_topic}
        assert set(broker.created) == set(all_topics(settings)) - existing
        assert broker.altered == [
            {
                kafka.command_topic: {"min.insync.replicas": "1", **STAMPED},
                kafka.deadletter_topic: {
                    "min.insync.replicas": "1",
                    "max.message.bytes": "2097152",
                    **FOREVER,
                    **STAMPED,
                },
            }
        ]

    async def test_a_second_start_changes_nothing(
        self, settings: CommonSettings, broker: Broker
    ) -> None:
        broker.configs = {settings.kafka.deadletter_topic: {}}
        await ensure_topics(settings)
        created, altered = list(broker.created), list(broker.altered)
        await ensure_topics(settings)
        assert (broker.created, broker.altered) == (created, altered)
        assert len(altered) == 1

    @pytest.mark.parametrize("refused", ["describe", "alter"])
    async def test_a_topic_whose_settings_this_process_may_not_touch_is_reported_not_fatal(
        self,
        settings: CommonSettings,
        broker: Broker,
        refused: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        topic = settings.kafka.deadletter_topic
        broker.configs = {topic: {}}
        refusals = broker.refuse_describe if refused == "describe" else broker.refuse_alter
        refusals[topic] = TopicAuthorizationFailedError.errno
        await ensure_topics(settings)
        assert broker.configs[topic] == {}
        assert "topic retention not checked: not authorized" in caplog.text

    async def test_any_other_refusal_stops_the_start(
        self, settings: CommonSettings, broker: Broker
    ) -> None:
        broker.configs = {settings.kafka.deadletter_topic: {}}
        broker.refuse_alter[settings.kafka.deadletter_topic] = PolicyViolationError.errno
        with pytest.raises(PolicyViolationError):
            await ensure_topics(settings)
