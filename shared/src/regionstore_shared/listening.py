"""A service's HTTP port, taken before anything else starts.

uvicorn binds its port only after the app's startup has opened every client, and when the bind
fails it waits for the app's shutdown before it exits: a gateway whose port was taken hung there,
served nothing and ignored SIGTERM. Binding first makes a taken port the first thing a process
finds out, with nothing opened yet, so it can say so and exit non-zero for its supervisor to see.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3
"""The exit status of a process that could not start: its port taken, or its app's startup
failed (uvicorn's own status for both)."""


class CannotListen(SystemExit):
    """The port could not be bound; exits the process with :data:`STARTUP_FAILURE`."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening: the server does that).

    Raises :class:`CannotListen` after logging why, when the address is taken, not this host's,
    or not allowed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn's own sockets: a restart may bind while the last run's connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        log.critical(
            "cannot listen on %s:%s: %s; exiting",
            host,
            port,
            reason,
            extra={"host": host, "port": port, "errno": error.errno},
        )
        raise CannotListen(STARTUP_FAILURE) from None
    return sock
