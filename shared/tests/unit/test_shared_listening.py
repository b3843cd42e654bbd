"""A process takes its HTTP port first, and a taken port ends it with a non-zero status."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from regionstore_shared.listening import STARTUP_FAILURE, CannotListen, listen


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def test_a_free_port_is_bound_and_left_for_the_server_to_listen_on() -> None:
    sock = listen("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    finally:
        sock.close()


def test_a_taken_port_exits_with_the_startup_failure_status_and_says_why(
    taken: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL), pytest.raises(CannotListen) as raised:
        listen("127.0.0.1", taken)
    assert raised.value.code == STARTUP_FAILURE != 0
    assert isinstance(raised.value, SystemExit)
    [record] = caplog.records
    assert f"127.0.0.1:{taken}" in record.getMessage()
    assert "in use" in record.getMessage()


def test_an_address_not_of_this_host_is_refused_the_same_way() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never a local address.
    with pytest.raises(CannotListen):
        listen("192.0.2.1", 0)
