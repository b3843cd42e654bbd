"""The topics the services create, and how each one keeps its records."""

from __future__ import annotations

import pytest

from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import _topic_config, all_topics, placement_topics
from shared.tests.fakes import clear_environment


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
