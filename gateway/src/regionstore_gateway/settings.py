"""Settings of the gateway."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from regionstore_shared.clock import MAX_NODE_ID
from regionstore_shared.settings import CommonSettings, HttpSettings


class ApiSettings(BaseModel):
    """Limits and defaults of the HTTP API."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 1000
    default_page_size: Annotated[int, Field(ge=1)] = 50
    max_page_size: Annotated[int, Field(ge=1)] = 500
    wait_applied_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    region_events_interval_s: Annotated[float, Field(gt=0)] = 5.0
    idempotency_ttl_s: Annotated[
        int, Field(ge=60, description="How long an Idempotency-Key is remembered.")
    ] = 24 * 60 * 60
    idempotency_key_prefix: str = "regionstore:idempotency:"
    retry_after_s: Annotated[
        int, Field(ge=0, le=3600, description="Retry-After of a 503 or 504 write answer.")
    ] = 2
    # Well above a healthy region's answers on the local stack (point reads take a few
    # milliseconds, a list page's share tens of them) and well below the socket timeout, so a
    # slow home region costs a read this much before its replica answers.
    read_deadline_ms: Annotated[
        int,
        Field(
            ge=1,
            le=60_000,
            description="Deadline of one region's read; a home that misses it is read from "
            "its replica.",
        ),
    ] = 500


class GatewaySettings(CommonSettings):
    """The shared sections plus the API's limits and this gateway's clock id."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONSTORE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    service_name: str = "gateway"
    http: HttpSettings = HttpSettings(port=8000)
    api: ApiSettings = ApiSettings()
    node_id: Annotated[
        int,
        Field(ge=0, le=MAX_NODE_ID, description="Unique per gateway process; orders versions."),
    ] = 0
