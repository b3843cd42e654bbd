"""Settings of the writer service."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from regionstore_shared.settings import CommonSettings, HttpSettings


class WriterSettings(CommonSettings):
    """The shared sections plus the writer's consumer group."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONSTORE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    service_name: str = "writer"
    http: HttpSettings = HttpSettings(port=8101)
    group_id: str = "regionstore.writer"
