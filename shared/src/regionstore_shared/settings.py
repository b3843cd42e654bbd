"""Settings sections shared by every service, read from ``REGIONSTORE_*`` environment variables.

Nested fields use ``__``, e.g. ``REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS`` or
``REGIONSTORE_STORES__REGION_2``.
The region map itself is JSON in ``REGIONSTORE_REGIONS``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec


class KafkaSettings(BaseModel):
    """Where the broker is and how the topics are named and sized."""

    bootstrap_servers: str = "127.0.0.1:9092"
    command_topic: str = "customers.commands"
    pending_topic_prefix: str = "pending."
    deadletter_topic: str = "customers.deadletter"
    partitions: Annotated[int, Field(ge=1, le=256)] = 6
    replication_factor: Annotated[int, Field(ge=1)] = 1
    request_timeout_ms: Annotated[int, Field(ge=1000)] = 15000
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 2
    max_batch_records: Annotated[int, Field(ge=1, le=100_000)] = 2000

    writer_group: str = "regionstore.writer"
    replicator_group: str = "regionstore.replicator"
    recovery_group_prefix: str = "regionstore.recovery."

    def pending_topic(self, region: str) -> str:
        """The hint log of one region."""
        return f"{self.pending_topic_prefix}{region}"

    def recovery_group(self, region: str) -> str:
        """The one stable consumer group that drains a region's hint log."""
        return f"{self.recovery_group_prefix}{region}"


class RedisSettings(BaseModel):
    """Node-status store."""

    url: str = "redis://127.0.0.1:6379/0"
    status_key_prefix: str = "regionstore:node:"
    socket_timeout_s: Annotated[float, Field(gt=0)] = 2.0

    def status_key(self, region: str) -> str:
        """The Redis key holding one region's availability."""
        return f"{self.status_key_prefix}{region}:status"


class StoreSettings(BaseModel):
    """How services talk to the regional stores."""

    database: str = "regionstore"
    collection: str = "customers"
    server_selection_timeout_ms: Annotated[int, Field(ge=100)] = 2000
    # A slow store is not a dead one: dead stores refuse connections and fail server selection
    # fast; this only bounds a store that accepted the request and never answers.
    socket_timeout_ms: Annotated[int, Field(ge=100)] = 20000
    # After a connection failure, a region is treated as down locally for this long before the
    # next attempt, so one dead store does not cost every batch a full selection timeout.
    suspect_for_s: Annotated[float, Field(ge=0)] = 3.0
    # Commands per request to one region: each request then ends well within the socket
    # timeout even when every command collides, and a failure parks only what was not written
    # yet.
    write_chunk: Annotated[int, Field(ge=1, le=100_000)] = 250


class HttpSettings(BaseModel):
    """The HTTP listener of a service (API for the gateway, health and metrics for the others)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000


def _default_store_uris() -> dict[str, str]:
    return {
        "region_1": "mongodb://127.0.0.1:27017/?directConnection=true",
        "region_2": "mongodb://127.0.0.1:27018/?directConnection=true",
        "region_3": "mongodb://127.0.0.1:27019/?directConnection=true",
    }


class CommonSettings(BaseSettings):
    """Every section a regionstore process needs; services subclass it to add their own."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONSTORE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    service_name: str = "regionstore"
    log_level: str = "INFO"
    # While a dependency stays down, one summary line per this many seconds instead of one per
    # retry (see regionstore_shared.logs).
    log_summary_s: Annotated[float, Field(gt=0)] = 30.0
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    regions: list[RegionSpec] = Field(default_factory=lambda: list(DEFAULT_REGIONS))
    stores: dict[str, str] = Field(default_factory=_default_store_uris)

    @field_validator("stores", mode="before")
    @classmethod
    def _keep_default_stores(cls, value: object) -> object:
        # Setting one region's URI (REGIONSTORE_STORES__REGION_2) keeps the others' defaults.
        if isinstance(value, dict):
            return {**_default_store_uris(), **value}
        return value

    @model_validator(mode="after")
    def _every_region_has_a_store(self) -> CommonSettings:
        region_map = RegionMap(self.regions)
        missing = [name for name in region_map.names if name not in self.stores]
        if missing:
            raise ValueError(
                f"no store URI for regions {missing}: set REGIONSTORE_STORES__<REGION>"
            )
        return self

    @cached_property
    def region_map(self) -> RegionMap:
        """The validated region map."""
        return RegionMap(self.regions)
