"""Settings of the writer service."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings, HttpSettings


class WriterSettings(CommonSettings):
    """The shared sections and the writer's port (its consumer group is `kafka.writer_group`)."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONSTORE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    service_name: str = "writer"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["WRITER_PORT"])
