"""Production mode refuses missing or placeholder credentials; no setting shows a secret."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from regionstore_shared.clients import (
    kafka_admin,
    kafka_connection,
    kafka_consumer,
    kafka_producer,
    mongo_client,
    redis_client,
)
from regionstore_shared.settings import (
    CommonSettings,
    KafkaSettings,
    RedisSettings,
    StoreSettings,
    redis_url_has_password,
    store_uri_has_credentials,
)

KAFKA_PASSWORD = "kafka-Pa55-0f-the-services"
REDIS_PASSWORD = "redis-Pa55-0f-the-services"
STORE_PASSWORD = "store-Pa55-0f-the-services"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, STORE_PASSWORD)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read REGIONSTORE_* variables; none from the outer shell may leak in."""
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)


def production_env() -> dict[str, str]:
    """Every variable a production service needs, with real-looking credentials."""
    stores = {
        f"REGIONSTORE_STORES__REGION_{n}": (
            f"mongodb://regionstore:{STORE_PASSWORD}@m{n}a:27017,m{n}b:27017/"
            f"?replicaSet=region_{n}&w=majority"
        )
        for n in (1, 2, 3)
    }
    return {
        "REGIONSTORE_ENVIRONMENT": "production",
        "REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        "REGIONSTORE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "REGIONSTORE_KAFKA__SASL_USERNAME": "regionstore",
        "REGIONSTORE_KAFKA__SASL_PASSWORD": KAFKA_PASSWORD,
        "REGIONSTORE_REDIS__URL": f"redis://regionstore:{REDIS_PASSWORD}@redis:6379/0",
        **stores,
    }


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> CommonSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CommonSettings()


def refusal(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        settings_from(monkeypatch, env)
    return refused.value


class TestDevelopment:
    def test_is_the_default_and_runs_without_credentials(self) -> None:
        settings = CommonSettings()

        assert settings.environment == "development"
        assert settings.kafka.security_protocol == "PLAINTEXT"
        assert not redis_url_has_password(settings.redis.url)

    def test_an_unknown_environment_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        error = refusal(monkeypatch, {"REGIONSTORE_ENVIRONMENT": "staging"})

        assert [e["loc"] for e in error.errors()] == [("environment",)]

    def test_sasl_without_credentials_is_refused_in_any_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        error = refusal(monkeypatch, {"REGIONSTORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})

        assert error.errors()[0]["loc"] == ("kafka",)
        assert "REGIONSTORE_KAFKA__SASL_USERNAME" in str(error)


class TestProduction:
    def test_starts_with_every_credential(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = settings_from(monkeypatch, production_env())

        assert settings.environment == "production"
        assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka.sasl_password.get_secret_value() == KAFKA_PASSWORD

    def test_refuses_the_defaults_naming_each_setting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        error = refusal(monkeypatch, {"REGIONSTORE_ENVIRONMENT": "production"})
        message = str(error)

        assert {e["loc"] for e in error.errors()} == {("kafka",), ("redis",), ("stores",)}
        assert "REGIONSTORE_KAFKA__SECURITY_PROTOCOL" in message
        assert "REGIONSTORE_REDIS__URL" in message
        for n in (1, 2, 3):
            assert f"REGIONSTORE_STORES__REGION_{n}" in message

    def test_refuses_kafka_without_sasl(self, monkeypatch: pytest.MonkeyPatch) -> None:
        env = production_env() | {"REGIONSTORE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}

        error = refusal(monkeypatch, env)

        assert [e["loc"] for e in error.errors()] == [("kafka",)]

    @pytest.mark.parametrize("password", ["changethis", "CHANGEME", "  "])
    def test_refuses_a_placeholder_kafka_password(
        self, monkeypatch: pytest.MonkeyPatch, password: str
    ) -> None:
        env = production_env() | {"REGIONSTORE_KAFKA__SASL_PASSWORD": password}

        error = refusal(monkeypatch, env)

        assert [e["loc"] for e in error.errors()] == [("kafka",)]

    @pytest.mark.parametrize(
        "url",
        [
            "redis://redis:6379/0",
            "redis://regionstore@redis:6379/0",
            "redis://:changeme@redis:6379/0",
            "redis://redis:6379/0?password=",
        ],
    )
    def test_refuses_redis_without_a_password(
        self, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        error = refusal(monkeypatch, production_env() | {"REGIONSTORE_REDIS__URL": url})

        assert [e["loc"] for e in error.errors()] == [("redis",)]

    def test_starts_with_credentials_apart_from_the_urls(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = production_env() | {
            "REGIONSTORE_REDIS__URL": "redis://redis:6379/0",
            "REGIONSTORE_REDIS__USERNAME": "regionstore",
            "REGIONSTORE_REDIS__PASSWORD": REDIS_PASSWORD,
            "REGIONSTORE_STORE__USERNAME": "regionstore",
            "REGIONSTORE_STORE__PASSWORD": STORE_PASSWORD,
        }
        env |= {f"REGIONSTORE_STORES__REGION_{n}": f"mongodb://m{n}a:27017/" for n in (1, 2, 3)}

        settings = settings_from(monkeypatch, env)

        assert settings.store.password.get_secret_value() == STORE_PASSWORD
        assert settings.redis.password.get_secret_value() == REDIS_PASSWORD

    @pytest.mark.parametrize(
        "missing", ["REGIONSTORE_STORE__USERNAME", "REGIONSTORE_STORE__PASSWORD"]
    )
    def test_a_store_login_needs_both_halves(
        self, monkeypatch: pytest.MonkeyPatch, missing: str
    ) -> None:
        env = production_env() | {
            "REGIONSTORE_STORE__USERNAME": "regionstore",
            "REGIONSTORE_STORE__PASSWORD": STORE_PASSWORD,
            "REGIONSTORE_STORES__REGION_1": "mongodb://m1a:27017/",
        }
        del env[missing]

        error = refusal(monkeypatch, env)

        assert [e["loc"] for e in error.errors()] == [("stores",)]
        assert "REGIONSTORE_STORES__REGION_1" in str(error)

    def test_refuses_one_store_without_credentials_and_names_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = production_env() | {
            "REGIONSTORE_STORES__REGION_2": "mongodb://m2a:27017/?replicaSet=region_2"
        }

        error = refusal(monkeypatch, env)

        assert [e["loc"] for e in error.errors()] == [("stores",)]
        assert "REGIONSTORE_STORES__REGION_2" in str(error)
        assert "REGIONSTORE_STORES__REGION_1" not in str(error)

    def test_a_region_left_to_its_default_store_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = production_env()
        del env["REGIONSTORE_STORES__REGION_3"]

        error = refusal(monkeypatch, env)

        assert "REGIONSTORE_STORES__REGION_3" in str(error)

    def test_no_error_shows_a_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Every section fails, each holding a secret in its input.
        env = production_env() | {
            "REGIONSTORE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
            "REGIONSTORE_REDIS__URL": f"redis://regionstore:{REDIS_PASSWORD}@redis:6379/0?x=",
            "REGIONSTORE_STORES__REGION_1": f"mongodb://:{STORE_PASSWORD}@m1a:27017/",
        }

        error = refusal(monkeypatch, env)

        assert {e["loc"] for e in error.errors()} == {("kafka",), ("stores",)}
        # str() is what a failed start prints and logs.
        for secret in SECRETS:
            assert secret not in str(error)


class TestNoSecretInTheRepr:
    def test_settings_repr_and_str_hide_every_credential(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        settings = settings_from(monkeypatch, production_env())

        for text in (repr(settings), str(settings), repr(settings.kafka), repr(settings.redis)):
            for secret in SECRETS:
                assert secret not in text
        assert "sasl_password=SecretStr('**********')" in repr(settings.kafka)

    def test_a_json_dump_masks_the_kafka_password(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = settings_from(monkeypatch, production_env())

        assert KAFKA_PASSWORD not in settings.kafka.model_dump_json()


class TestCredentialChecks:
    @pytest.mark.parametrize(
        ("uri", "has"),
        [
            ("mongodb://u:p4ss@a:1,b:2/?replicaSet=r", True),
            ("mongodb+srv://u:p4ss@cluster.example.net/", True),
            ("mongodb://a:1/?authMechanism=MONGODB-X509&tls=true", True),
            ("mongodb://a:1/?directConnection=true", False),
            ("mongodb://u@a:1/", False),
            ("mongodb://:p4ss@a:1/", False),
            ("mongodb://u:password@a:1/", False),
        ],
    )
    def test_store_uri(self, uri: str, has: bool) -> None:
        assert store_uri_has_credentials(uri) is has

    @pytest.mark.parametrize(
        ("url", "has"),
        [
            ("redis://:p4ss@h:6379/0", True),
            ("redis://svc:p4ss@h:6379/0", True),
            ("rediss://svc:p4ss@h:6380/0", True),
            ("redis://h:6379/0?password=p4ss", True),
            ("redis://h:6379/0", False),
            ("redis://svc:@h:6379/0", False),
            ("redis://svc:secret@h:6379/0", False),
        ],
    )
    def test_redis_url(self, url: str, has: bool) -> None:
        assert redis_url_has_password(url) is has


def sasl_settings(protocol: str = "SASL_PLAINTEXT") -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": "kafka:9092",
            "security_protocol": protocol,
            "sasl_username": "regionstore",
            "sasl_password": KAFKA_PASSWORD,
        }
    )


class TestKafkaClientOptions:
    def test_plaintext_passes_no_sasl_options(self) -> None:
        options = kafka_connection(KafkaSettings())

        assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}

    def test_sasl_passes_scram_credentials(self) -> None:
        options = kafka_connection(sasl_settings())

        assert options == {
            "bootstrap_servers": "kafka:9092",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "regionstore",
            "sasl_plain_password": KAFKA_PASSWORD,
        }

    def test_sasl_ssl_adds_a_verifying_tls_context(self) -> None:
        context = kafka_connection(sasl_settings("SASL_SSL"))["ssl_context"]

        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname

    # The clients are only built, never started: no I/O (aiokafka wants a running loop to
    # build one). They keep the options on their inner client, where these read them back.
    async def test_the_producer_authenticates(self) -> None:
        producer = kafka_producer(sasl_settings(), "unit")
        try:
            assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
            assert producer.client._sasl_plain_password == KAFKA_PASSWORD
            assert producer.client._security_protocol == "SASL_PLAINTEXT"
        finally:
            await producer.stop()

    async def test_the_consumer_authenticates(self) -> None:
        consumer = kafka_consumer(sasl_settings(), "topic", group_id="g", client_id="unit")
        try:
            assert consumer._client._sasl_plain_username == "regionstore"
            assert consumer._client._sasl_plain_password == KAFKA_PASSWORD
            assert consumer._client._security_protocol == "SASL_PLAINTEXT"
        finally:
            await consumer.stop()

    async def test_the_admin_client_authenticates(self) -> None:
        admin = kafka_admin(sasl_settings(), "unit")

        assert admin._client._sasl_mechanism == "SCRAM-SHA-512"
        assert admin._client._sasl_plain_password == KAFKA_PASSWORD


class TestStoreAndRedisLogin:
    async def test_the_store_client_logs_in_with_the_settings(self) -> None:
        store = StoreSettings(username="regionstore", password=SecretStr(STORE_PASSWORD))
        client = mongo_client("mongodb://m1a:27017/", store, "unit")
        try:
            credentials = client.options.pool_options._credentials
            assert credentials is not None
            assert (credentials.username, credentials.password) == ("regionstore", STORE_PASSWORD)
        finally:
            await client.close()

    async def test_the_store_client_keeps_the_uri_login_without_settings(self) -> None:
        uri = f"mongodb://svc:{STORE_PASSWORD}@m1a:27017/"
        client = mongo_client(uri, StoreSettings(), "unit")
        try:
            credentials = client.options.pool_options._credentials
            assert credentials is not None
            assert credentials.username == "svc"
        finally:
            await client.close()

    async def test_the_redis_client_logs_in_with_the_settings(self) -> None:
        settings = RedisSettings(
            url="redis://redis:6379/0", username="regionstore", password=SecretStr(REDIS_PASSWORD)
        )
        client = redis_client(settings, "unit")
        try:
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["username"], kwargs["password"]) == ("regionstore", REDIS_PASSWORD)
        finally:
            await client.aclose()

    async def test_the_redis_client_keeps_the_url_login_without_settings(self) -> None:
        settings = RedisSettings(url=f"redis://svc:{REDIS_PASSWORD}@redis:6379/0")
        client = redis_client(settings, "unit")
        try:
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["username"], kwargs["password"]) == ("svc", REDIS_PASSWORD)
        finally:
            await client.aclose()


class TestDockerSecrets:
    def test_a_secret_file_sets_a_section_field(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "regionstore_kafka__sasl_password").write_text(KAFKA_PASSWORD)
        (tmp_path / "regionstore_store__password").write_text(STORE_PASSWORD)
        monkeypatch.setenv("REGIONSTORE_KAFKA__SASL_USERNAME", "regionstore")
        monkeypatch.setenv("REGIONSTORE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")

        settings = CommonSettings(_secrets_dir=tmp_path)

        assert settings.kafka.sasl_password.get_secret_value() == KAFKA_PASSWORD
        assert settings.kafka.sasl_username == "regionstore"
        assert settings.store.password.get_secret_value() == STORE_PASSWORD

    def test_the_environment_wins_over_a_secret_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "regionstore_redis__password").write_text("from-the-file")
        monkeypatch.setenv("REGIONSTORE_REDIS__PASSWORD", REDIS_PASSWORD)

        settings = CommonSettings(_secrets_dir=tmp_path)

        assert settings.redis.password.get_secret_value() == REDIS_PASSWORD

    def test_no_secrets_directory_is_fine(self, tmp_path: Path) -> None:
        settings = CommonSettings(_secrets_dir=tmp_path / "absent")

        assert settings.kafka.sasl_password.get_secret_value() == ""
