"""Where the gateway is and which API key to send, from ``REGIONSTORE_*`` and ``RUN_DIR``.

The key comes from :mod:`regionstore_shared.api_key`'s lookup. No key at all is not an error
here: a gateway that needs one answers 401, and the command says so.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from regionstore_shared.api_key import ClientKeySettings, configured_key
from regionstore_shared.ports import DEFAULT_PORTS, service_url

DEFAULT_GATEWAY_URL = service_url(DEFAULT_PORTS["GATEWAY_PORT"])


class ToolSettings(BaseSettings):
    """What the command line reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="REGIONSTORE_", extra="ignore")

    gateway_url: str = DEFAULT_GATEWAY_URL

    def key(self) -> str | None:
        """The API key to send; None when there is none."""
        return configured_key(ClientKeySettings())
