"""Settings of the gateway."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from regionstore_shared.clock import MAX_NODE_ID
from regionstore_shared.ports import DEFAULT_PORTS, redis_url
from regionstore_shared.settings import (
    CommonSettings,
    HttpSettings,
    RedisSettings,
    is_placeholder,
    redis_login_required,
)

MIN_SECRET_CHARS = 32


class ApiSettings(BaseModel):
    """Limits and defaults of the HTTP API."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    # A request head is a few hundred bytes: a client that has not sent one in this long is
    # stalling, not slow. The body deadline lets a full-size body arrive at about 140 KB/s.
    header_timeout_s: Annotated[
        float,
        Field(
            gt=0,
            le=300,
            description="A connection whose request head is not in by then "
            "is closed (also bounds an idle new connection).",
        ),
    ] = 10.0
    body_timeout_s: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="A request body not in by then, counted from the end "
            "of its head, is answered 408 and its connection closed.",
        ),
    ] = 30.0
    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 1000
    default_page_size: Annotated[int, Field(ge=1)] = 50
    max_page_size: Annotated[int, Field(ge=1)] = 500
    max_filter_records: Annotated[
        int,
        Field(
            ge=1,
            description="The most records one answer of /filter-records carries; a filter "
            "matching more is answered 422.",
        ),
    ] = 10_000
    max_filter_scan: Annotated[
        int,
        Field(
            ge=1,
            description="The most index entries of one region /filter-records reads for a "
            "filter that combines a zip range and a city; one needing more is answered 422.",
        ),
    ] = 50_000
    scan_budget_factor: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="A page whose filter combines a zip range and a city tests the city on "
            "at most this many zip-index entries per row asked for, per region; a page whose "
            "entries hold fewer matches is short, with a next cursor.",
        ),
    ] = 10
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


class BackpressureSettings(BaseModel):
    """When new writes are refused with 429 because the consumers are too far behind."""

    # A write is applied about lag / apply rate after it is accepted: on the local stack half a
    # second per thousand commands of lag while a load is being accepted. 50,000 bounds that at
    # about 25 s there, and is about what a consumer's crash builds at 1,000 writes/s at a
    # million customers (50 s out, 54,000 behind), so a 429 means the consumers cannot keep up,
    # not that one blinked (docs/backpressure.md).
    max_writer_lag: Annotated[
        int,
        Field(
            ge=0,
            description="Commands the writer may be behind before new writes are refused with "
            "429; 0 never refuses for it.",
        ),
    ] = 50_000
    max_replicator_lag: Annotated[
        int,
        Field(
            ge=0,
            description="Commands the replicator may be behind before new writes are refused "
            "with 429; 0 never refuses for it.",
        ),
    ] = 50_000
    refresh_s: Annotated[
        float, Field(gt=0, le=60, description="How often the lag is read from Kafka.")
    ] = 1.0
    idle_refresh_s: Annotated[
        float,
        Field(
            gt=0,
            le=60,
            description="How often the lag is read while this gateway takes no write (at most "
            "half of stale_after_s); the first write reads it at once.",
        ),
    ] = 5.0
    stale_after_s: Annotated[
        float,
        Field(
            gt=0,
            description="A group's lag is judged by its last reading for this long; older, it "
            "refuses nothing (Kafka could not be read since).",
        ),
    ] = 30.0
    retry_after_s: Annotated[
        int, Field(ge=1, le=3600, description="Retry-After of a write refused with 429.")
    ] = 2


class AuditSettings(BaseModel):
    """What each gateway keeps in memory from the audit trail, for the console."""

    tail_events: Annotated[
        int,
        Field(
            ge=0,
            le=1_000_000,
            description="How many of the trail's last events a gateway reads back at start-up.",
        ),
    ] = 1000
    recent_changes: Annotated[
        int, Field(ge=1, le=100, description="Status changes shown per region, newest first.")
    ] = 5


class AuthSettings(BaseModel):
    """API keys: the server secret their digests are made with, their cache and rate limits."""

    model_config = ConfigDict(hide_input_in_errors=True)

    secret: Annotated[
        SecretStr,
        Field(
            description="Server secret of the key digests and CSRF tokens "
            f"(REGIONSTORE_AUTH__SECRET); production needs {MIN_SECRET_CHARS}+ characters."
        ),
    ] = SecretStr("")
    key_prefix: str = "regionstore:apikey:"
    cache_refresh_s: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="A verified key is read again from Redis after this long: a "
            "revocation takes effect within it.",
        ),
    ] = 30.0
    default_rate: Annotated[
        float, Field(gt=0, description="Requests per second of a key without its own rate.")
    ] = 1000.0
    default_burst: Annotated[
        int, Field(ge=1, description="Requests at once of a key without its own burst.")
    ] = 2000


class GatewaySettings(CommonSettings):
    """The shared sections plus the API's limits and this gateway's clock id."""

    service_name: str = "gateway"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["GATEWAY_PORT"])
    api: ApiSettings = ApiSettings()
    backpressure: BackpressureSettings = BackpressureSettings()
    audit: AuditSettings = AuditSettings()
    # Validated when defaulted too: production must refuse to start without a secret.
    auth: Annotated[AuthSettings, Field(validate_default=True)] = AuthSettings()
    node_id: Annotated[
        Annotated[int, Field(ge=0, le=MAX_NODE_ID)] | Literal["auto"],
        Field(
            description="Unique per gateway process; orders versions. 'auto' leases a free "
            "one from Redis, for identical replicas that cannot be given an ordinal."
        ),
    ] = 0
    node_lease_ttl_s: Annotated[
        float,
        Field(
            gt=0,
            description="With node_id 'auto': how long a leased id outlives its last renewal; "
            "writes are refused once it lapsed, until an id is held again.",
        ),
    ] = 15.0
    node_lease_prefix: str = "regionstore:node-id:"
    access_log: Annotated[
        bool,
        Field(
            description="One INFO line per request (method, route template, status, duration, "
            "key id, trace id); false turns it off."
        ),
    ] = True
    # Its own Redis, so a day of keyed writes can only fill the records' own budget: there
    # they may be evicted (oldest first), while the control plane's Redis keeps noeviction.
    idempotency_redis: Annotated[
        RedisSettings,
        Field(
            validate_default=True,
            description="The Redis of the idempotency records, apart from the one of the "
            "region statuses, API keys and clock leases (REGIONSTORE_REDIS__*).",
        ),
    ] = RedisSettings(url=redis_url(DEFAULT_PORTS["IDEMPOTENCY_REDIS_PORT"]))

    @field_validator("idempotency_redis")
    @classmethod
    def _idempotency_redis_login(cls, redis: RedisSettings, info: ValidationInfo) -> RedisSettings:
        return redis_login_required(redis, info, "REGIONSTORE_IDEMPOTENCY_REDIS")

    @field_validator("auth")
    @classmethod
    def _secret_set_in_production(cls, auth: AuthSettings, info: ValidationInfo) -> AuthSettings:
        if info.data.get("environment") != "production":
            return auth
        secret = auth.secret.get_secret_value()
        if is_placeholder(secret) or len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"REGIONSTORE_AUTH__SECRET must be a random string of at least "
                f"{MIN_SECRET_CHARS} characters in production"
            )
        return auth
