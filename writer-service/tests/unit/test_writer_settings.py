"""The writer's settings: its name, port and consumer group, and how the environment sets them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regionstore_writer.settings import WriterSettings


def test_defaults_name_the_writer_its_port_and_its_group() -> None:
    settings = WriterSettings()
    assert settings.service_name == "writer"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8101)
    assert settings.kafka.writer_group == "regionstore.writer"
    assert settings.kafka.command_topic == "customers.commands"


def test_the_environment_sets_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "9101")
    monkeypatch.setenv("REGIONSTORE_KAFKA__WRITER_GROUP", "blue.writer")
    settings = WriterSettings()
    assert settings.http.port == 9101
    assert settings.http.host == "127.0.0.1"  # the section's other fields keep their defaults
    assert settings.kafka.writer_group == "blue.writer"


def test_a_port_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "70000")
    with pytest.raises(ValidationError, match=r"http\.port"):
        WriterSettings()


def test_settings_are_frozen() -> None:
    settings = WriterSettings()
    with pytest.raises(ValidationError):
        settings.service_name = "other"  # type: ignore[misc]
