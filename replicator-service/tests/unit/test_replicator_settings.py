"""The replicator's settings: its name, port and group, and how the environment sets them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regionstore_replicator.settings import ReplicatorSettings


def test_defaults_name_the_replicator_its_port_and_its_group() -> None:
    settings = ReplicatorSettings()
    assert settings.service_name == "replicator"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8102)
    assert settings.kafka.replicator_group == "regionstore.replicator"
    assert settings.kafka.command_topic == "customers.commands"


def test_the_environment_sets_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "9102")
    monkeypatch.setenv("REGIONSTORE_KAFKA__REPLICATOR_GROUP", "blue.replicator")
    settings = ReplicatorSettings()
    assert settings.http.port == 9102
    assert settings.http.host == "127.0.0.1"  # the section's other fields keep their defaults
    assert settings.kafka.replicator_group == "blue.replicator"


def test_a_port_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "70000")
    with pytest.raises(ValidationError, match=r"http\.port"):
        ReplicatorSettings()


def test_settings_are_frozen() -> None:
    settings = ReplicatorSettings()
    with pytest.raises(ValidationError):
        settings.service_name = "other"  # type: ignore[misc]
