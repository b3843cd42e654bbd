"""The OpenAPI document's version is the installed package's, not a second copy of it."""

from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings


def test_openapi_info_version_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    document = create_app(GatewaySettings()).openapi()
    assert document["info"]["version"] == version("regionstore-gateway")
