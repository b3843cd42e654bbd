"""The local stack's ports and addresses, from ``ports.env`` beside this module.

The file holds the defaults (the Makefile reads it too). The settings take the defaults alone,
so a service is configured only by its ``REGIONSTORE_*`` variables; tests and bench, which find
a local stack the way ``make`` starts it, let a port variable of the same name (``KAFKA_PORT``,
``REGION_1_PORT``, ``GATEWAY_PORT``, ...) win.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from regionstore_shared.regions import DEFAULT_REGIONS

PORTS_ENV = Path(__file__).with_name("ports.env")
SERVICES = ("gateway", "writer", "replicator", "recovery")


def read_ports(text: str) -> dict[str, int]:
    """``NAME=port`` lines (blank lines and ``#`` comments aside) as a mapping."""
    ports: dict[str, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            ports[name.strip()] = int(value)
    return ports


DEFAULT_PORTS: Mapping[str, int] = MappingProxyType(read_ports(PORTS_ENV.read_text()))


def port(name: str, env: Mapping[str, str] = os.environ) -> int:
    """The port variable ``name``: from ``env`` when set there, else its default."""
    return int(env.get(name) or DEFAULT_PORTS[name])


def kafka_bootstrap(kafka_port: int) -> str:
    """The local broker's bootstrap address."""
    return f"127.0.0.1:{kafka_port}"


def redis_url(redis_port: int) -> str:
    """The local Redis, without credentials."""
    return f"redis://127.0.0.1:{redis_port}/0"


def store_uri(store_port: int) -> str:
    """A local regional store, without credentials."""
    return f"mongodb://127.0.0.1:{store_port}/?directConnection=true"


def service_url(service_port: int) -> str:
    """A local service's HTTP address."""
    return f"http://127.0.0.1:{service_port}"


def store_uris(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every default region's store, at its port variable (``REGION_<N>_PORT``)."""
    return {r.name: store_uri(port(f"{r.name.upper()}_PORT", env)) for r in DEFAULT_REGIONS}


def default_store_uris() -> dict[str, str]:
    """Every default region's store at its default port."""
    return store_uris({})


def local_service_urls(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Where each service answers: ``REGIONSTORE_<SERVICE>_URL``, else its port variable."""
    return {
        name: env.get(f"REGIONSTORE_{name.upper()}_URL")
        or service_url(port(f"{name.upper()}_PORT", env))
        for name in SERVICES
    }
