"""Checks every consumer service's tests share: how its main wires the consumer, its settings."""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from regionstore_shared.runtime import ServiceState
from regionstore_shared.settings import CommonSettings


def main_consumer_call(
    monkeypatch: pytest.MonkeyPatch, main: ModuleType
) -> tuple[dict[str, Any], ServiceState]:
    """Runs a service's ``main.main()`` with a recording consumer: the one call, and the state."""
    calls: list[dict[str, Any]] = []
    state = ServiceState()

    async def consume_commands(settings: CommonSettings, **options: Any) -> None:
        calls.append({"settings": settings, **options})

    async def run_service(settings: CommonSettings, work: Any) -> None:
        await work(state)

    monkeypatch.setattr(main, "consume_commands", consume_commands)
    monkeypatch.setattr(main, "run_service", run_service)
    main.main()
    (call,) = calls
    return call, state


class CommandConsumerSettingsChecks:
    """The settings of a service that consumes the command topic; a test class names its own."""

    settings_class: ClassVar[type[CommonSettings]]
    name: ClassVar[str]
    port: ClassVar[int]
    group_field: ClassVar[str]

    def test_defaults_name_the_service_its_port_and_its_group(self) -> None:
        settings = self.settings_class()
        assert settings.service_name == self.name
        assert (settings.http.host, settings.http.port) == ("127.0.0.1", self.port)
        assert getattr(settings.kafka, self.group_field) == f"regionstore.{self.name}"
        assert settings.kafka.command_topic == "customers.commands"

    def test_the_environment_sets_nested_fields(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_HTTP__PORT", str(self.port + 1000))
        monkeypatch.setenv(f"REGIONSTORE_KAFKA__{self.group_field.upper()}", f"blue.{self.name}")
        settings = self.settings_class()
        assert settings.http.port == self.port + 1000
        assert settings.http.host == "127.0.0.1"  # the section's other fields keep their defaults
        assert getattr(settings.kafka, self.group_field) == f"blue.{self.name}"

    def test_a_port_out_of_range_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "70000")
        with pytest.raises(ValidationError, match=r"http\.port"):
            self.settings_class()

    def test_settings_are_frozen(self) -> None:
        settings = self.settings_class()
        with pytest.raises(ValidationError):
            settings.service_name = "other"
