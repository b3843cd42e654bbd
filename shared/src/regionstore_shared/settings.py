"""Settings sections shared by every service, read from ``REGIONSTORE_*`` environment variables.

Nested fields use ``__``, e.g. ``REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS`` or
``REGIONSTORE_STORES__REGION_2``.
The region map itself is JSON in ``REGIONSTORE_REGIONS``.

A Docker secret in /run/secrets counts as the variable of its name
(``/run/secrets/regionstore_redis__password`` as ``REGIONSTORE_REDIS__PASSWORD``); the
environment wins.

``REGIONSTORE_ENVIRONMENT=production`` refuses to start with a secret that is missing or a known
placeholder: Redis without a password, a store without credentials, Kafka without SASL.
Credentials never appear in a settings repr or in a validation error (``hide_input_in_errors``).
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from regionstore_shared.ports import DEFAULT_PORTS, default_store_uris, kafka_bootstrap, redis_url
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap, RegionSpec

Environment = Literal["development", "production"]

# Where Docker mounts a service's secrets, one file each (see CommonSettings).
SECRETS_DIR = "/run/secrets"

# Values that stand in for a secret in templates and examples; production refuses them.
PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "change-me", "password", "secret"})

# How long the broker may hold a fetch that nothing answers yet, when a record would answer it at
# once: at Kafka's 500 ms the followers and idle consumers of one stack asked about 20 times a
# second, most of Kafka's idle CPU (docs/performance.md, "What a write costs").
HELD_FETCH_MS = 5000

# Error messages show the settings' location and our text only, never the input (a secret).
_SECTION_CONFIG = ConfigDict(hide_input_in_errors=True)


def is_placeholder(secret: str) -> bool:
    """Whether a secret is empty or a well-known placeholder."""
    return secret.strip().lower() in PLACEHOLDER_SECRETS or not secret.strip()


def redis_url_has_password(url: str) -> bool:
    """Whether a Redis URL carries a real password (``redis://user:pw@host`` or ``?password=``)."""
    parts = urlsplit(url)
    password = parts.password or "".join(parse_qs(parts.query).get("password", []))
    return not is_placeholder(password)


def redis_login_required(
    redis: RedisSettings, info: ValidationInfo, variable: str
) -> RedisSettings:
    """``redis``, unless it has no password in production (``variable`` names its settings)."""
    if not _production(info) or redis_url_has_password(redis.url):
        return redis
    if is_placeholder(redis.password.get_secret_value()):
        raise ValueError(
            f"Redis needs a password in production: {variable}__PASSWORD, or "
            f"{variable}__URL=redis://user:password@host:port/0"
        )
    return redis


def store_uri_has_credentials(uri: str) -> bool:
    """Whether a MongoDB URI authenticates: a user and a real password, or X.509."""
    parts = urlsplit(uri)
    mechanisms = parse_qs(parts.query).get("authMechanism", [])
    if "MONGODB-X509" in mechanisms:
        return True
    userinfo, at, _ = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return bool(at and user) and not is_placeholder(password)


class KafkaSettings(BaseModel):
    """Where the broker is, how clients authenticate, and how the topics are named and sized."""

    model_config = _SECTION_CONFIG

    bootstrap_servers: str = kafka_bootstrap(DEFAULT_PORTS["KAFKA_PORT"])
    # SASL_SSL in production; SASL_PLAINTEXT only on a private network.
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    command_topic: str = "customers.commands"
    pending_topic_prefix: str = "pending."
    deadletter_topic: str = "customers.deadletter"
    # Who changed a region's status or deleted a customer, and when: one partition, kept forever.
    audit_topic: str = "audit.events"
    # The customers' data keys (regionstore_shared.personal_keys): compacted, one record a key.
    key_topic: str = "customers.keys"
    partitions: Annotated[int, Field(ge=1, le=256)] = 6
    replication_factor: Annotated[int, Field(ge=1)] = 1
    request_timeout_ms: Annotated[int, Field(ge=1000)] = 15000
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 2
    max_batch_records: Annotated[int, Field(ge=1, le=100_000)] = 2000
    # The writer and the replicator commit their placement tables and offsets at most this
    # often (a transaction per partition each time, Kafka's largest cost at low rates), whatever
    # the number of batches between; a crash or a rebalance replays what was applied since,
    # harmlessly (docs/performance.md, "What a write costs").
    commit_interval_ms: Annotated[int, Field(ge=0, le=60_000)] = 5000
    # How the writer and the replicator fetch commands: the broker answers a fetch once it holds
    # fetch_min_bytes for it, or after fetch_max_wait_ms. At low rates a batch then gathers the
    # commands of that wait instead of one each (each batch costs a fetch, a routing, a bulk
    # write per region, a status read), at the price of that wait in accept-to-applied time.
    # Kafka's defaults (answered at the first byte): gathering (1 MiB, 200 ms) is a deployment's
    # choice of CPU over latency, measured in docs/performance.md. Without gathering the wait
    # delays nothing, and held_fetch_ms is used instead.
    fetch_min_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 1
    fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 500

    writer_group: str = "regionstore.writer"
    replicator_group: str = "regionstore.replicator"
    recovery_group_prefix: str = "regionstore.recovery."

    @property
    def held_fetch_ms(self) -> int:
        """How long the broker may hold a fetch that is answered at its first record (a
        minimum of one byte): it delays no record, it only sets how often an idle consumer or
        follower asks again. Within half a request's time, which bounds a fetch."""
        return min(HELD_FETCH_MS, self.request_timeout_ms // 2)

    @property
    def idle_poll_ms(self) -> int:
        """How long a command consumer's poll waits before it counts the topic as idle (and
        commits what it applied): longer than a fetch may wait, so a fetch still gathering
        commands is never taken for an idle topic."""
        return self.fetch_max_wait_ms + 500

    @property
    def uses_sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.security_protocol.startswith("SASL_")

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.uses_sasl and not (self.sasl_username and self.sasl_password.get_secret_value()):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs "
                "REGIONSTORE_KAFKA__SASL_USERNAME and REGIONSTORE_KAFKA__SASL_PASSWORD"
            )
        return self

    def pending_topic(self, region: str) -> str:
        """The topic that holds what is parked for one region (``pending.<region>``)."""
        return f"{self.pending_topic_prefix}{region}"

    def placement_topic(self, group: str) -> str:
        """The compacted topic of a consumer group's placement tables."""
        return f"{group}.placement"

    def recovery_group(self, region: str) -> str:
        """The one stable consumer group that drains what is parked for a region."""
        return f"{self.recovery_group_prefix}{region}"

    @property
    def redrive_topic(self) -> str:
        """The compacted topic recording which dead letters were redriven, one entry each."""
        return f"{self.deadletter_topic}.redriven"


class RedisSettings(BaseModel):
    """Node-status store."""

    model_config = _SECTION_CONFIG

    # May carry the password (redis://user:password@host:port/0): kept out of the repr.
    url: str = Field(default=redis_url(DEFAULT_PORTS["REDIS_PORT"]), repr=False)
    # Or the credentials on their own, for a URL without any (e.g. the password from a secret).
    username: str = ""
    password: SecretStr = SecretStr("")
    status_key_prefix: str = "regionstore:node:"
    # A hash, one field per region: documents applied so far (regionstore_shared.applied_totals).
    applied_key: str = "regionstore:applied"
    # A capped stream of "this service saw that region fail", which the failure detector
    # counts (regionstore_shared.health).
    health_key: str = "regionstore:health"
    socket_timeout_s: Annotated[float, Field(gt=0)] = 2.0

    def status_key(self, region: str) -> str:
        """The Redis key holding one region's availability."""
        return f"{self.status_key_prefix}{region}:status"


class StoreSettings(BaseModel):
    """How services talk to the regional stores."""

    model_config = _SECTION_CONFIG

    # The login for every region, unless a store URI carries its own (mongodb://user:pw@...).
    username: str = ""
    password: SecretStr = SecretStr("")
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
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORTS["GATEWAY_PORT"]


class CommonSettings(BaseSettings):
    """Every section a regionstore process needs; services subclass it to add their own."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONSTORE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        # Docker secrets: /run/secrets/regionstore_kafka__sasl_password sets kafka.sasl_password,
        # as REGIONSTORE_KAFKA__SASL_PASSWORD would (the environment wins).
        secrets_dir=SECRETS_DIR,
        secrets_dir_missing="ok",
        secrets_nested_delimiter="__",
    )

    # First, so the validators of the sections below can read it.
    environment: Environment = "development"
    service_name: str = "regionstore"
    log_level: str = "INFO"
    # While a dependency stays down, one summary line per this many seconds instead of one per
    # retry (see regionstore_shared.logs).
    log_summary_s: Annotated[float, Field(gt=0)] = 30.0
    # After a delete, no readable copy of the customer's fields is left anywhere after this
    # long (docs/personal-data.md): at most 30 days, as the README promises.
    erasure_within: Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(days=30))] = timedelta(
        days=30
    )
    # Where a consumer keeps its placement tables on disk, one directory per process. Unset: a
    # temporary one, so a restart reads the tables from Kafka again (slow at millions).
    state_dir: Path | None = None
    # The page cache of those tables: what they cost in memory, whatever their size.
    state_cache_mib: Annotated[int, Field(ge=1, le=4096)] = 32
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    regions: list[RegionSpec] = Field(default_factory=lambda: list(DEFAULT_REGIONS))
    # The URIs carry the stores' credentials: kept out of the repr.
    stores: dict[str, str] = Field(default_factory=default_store_uris, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The nested source reads a secret into a field of a section, which the flat one cannot.
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return init_settings, env_settings, dotenv_settings, secrets

    @field_validator("stores", mode="before")
    @classmethod
    def _keep_default_stores(cls, value: object) -> object:
        # Setting one region's URI (REGIONSTORE_STORES__REGION_2) keeps the others' defaults.
        if isinstance(value, dict):
            return {**default_store_uris(), **value}
        return value

    @field_validator("kafka")
    @classmethod
    def _kafka_authenticates_in_production(
        cls, kafka: KafkaSettings, info: ValidationInfo
    ) -> KafkaSettings:
        if not _production(info):
            return kafka
        if not kafka.uses_sasl:
            raise ValueError(
                "REGIONSTORE_KAFKA__SECURITY_PROTOCOL must be SASL_SSL or SASL_PLAINTEXT "
                "in production"
            )
        if is_placeholder(kafka.sasl_password.get_secret_value()):
            raise ValueError("REGIONSTORE_KAFKA__SASL_PASSWORD is a placeholder")
        return kafka

    @field_validator("redis")
    @classmethod
    def _redis_authenticates_in_production(
        cls, redis: RedisSettings, info: ValidationInfo
    ) -> RedisSettings:
        return redis_login_required(redis, info, "REGIONSTORE_REDIS")

    @field_validator("stores")
    @classmethod
    def _stores_authenticate_in_production(
        cls, stores: dict[str, str], info: ValidationInfo
    ) -> dict[str, str]:
        if not _production(info):
            return stores
        store = info.data.get("store")
        if (
            isinstance(store, StoreSettings)
            and store.username
            and not is_placeholder(store.password.get_secret_value())
        ):
            return stores
        bare = sorted(
            region for region, uri in stores.items() if not store_uri_has_credentials(uri)
        )
        if bare:
            names = ", ".join(f"REGIONSTORE_STORES__{region.upper()}" for region in bare)
            raise ValueError(
                f"{names} need credentials in production: mongodb://user:password@hosts/..., "
                "or REGIONSTORE_STORE__USERNAME and REGIONSTORE_STORE__PASSWORD for every region"
            )
        return stores

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


def _production(info: ValidationInfo) -> bool:
    return info.data.get("environment") == "production"
