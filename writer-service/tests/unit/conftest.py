"""Every unit test here sees the settings' defaults, whatever the environment exports."""

from __future__ import annotations

import pytest

from shared.tests.fakes import clear_environment


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)
