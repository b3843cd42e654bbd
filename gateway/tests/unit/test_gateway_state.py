"""What the gateway does once its clients are open, before it serves."""

from __future__ import annotations

import gc

import pytest

from regionstore_gateway.state import freeze_startup_objects


def test_startup_garbage_is_collected_before_the_rest_is_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    freeze_startup_objects()
    assert calls == ["collect", "freeze"]
