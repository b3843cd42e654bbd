"""A gateway whose port is taken exits at once, before it opens a single client."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from regionstore_gateway import main as gateway_main
from regionstore_shared.listening import STARTUP_FAILURE


@pytest.fixture
def taken() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def test_the_gateway_exits_non_zero_without_building_its_app(
    taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    monkeypatch.setenv("REGIONSTORE_HTTP__HOST", "127.0.0.1")
    monkeypatch.setenv("REGIONSTORE_HTTP__PORT", str(taken))
    monkeypatch.setattr(gateway_main, "create_app", lambda *a, **k: built.append(a))
    monkeypatch.setattr(gateway_main, "configure_logging", lambda *a, **k: None)
    with pytest.raises(SystemExit) as raised:
        gateway_main.main()
    assert raised.value.code == STARTUP_FAILURE
    assert built == []
