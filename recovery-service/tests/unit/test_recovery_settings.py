"""Recovery's settings: its port, how often it re-reads statuses, how its drains back off."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regionstore_recovery.settings import RecoverySettings


def test_defaults() -> None:
    settings = RecoverySettings()
    assert settings.service_name == "recovery"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8103)
    assert settings.resync_interval_s == 10.0
    assert (settings.retry_min_s, settings.retry_max_s) == (0.5, 10.0)


def test_each_region_is_drained_by_its_own_group_from_its_own_topic() -> None:
    kafka = RecoverySettings().kafka
    assert [kafka.recovery_group(r) for r in ("region_1", "region_3")] == [
        "regionstore.recovery.region_1",
        "regionstore.recovery.region_3",
    ]
    assert kafka.pending_topic("region_2") == "pending.region_2"


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONSTORE_RESYNC_INTERVAL_S", "2.5")
    monkeypatch.setenv("REGIONSTORE_RETRY_MAX_S", "30")
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", "9103")
    settings = RecoverySettings()
    assert (settings.resync_interval_s, settings.retry_max_s, settings.http.port) == (2.5, 30, 9103)


@pytest.mark.parametrize("name", ["RESYNC_INTERVAL_S", "RETRY_MIN_S", "RETRY_MAX_S"])
def test_an_interval_must_be_positive(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(f"REGIONSTORE_{name}", "0")
    with pytest.raises(ValidationError, match=name.lower()):
        RecoverySettings()
