"""deploy/compose.yaml and deploy/Dockerfile, checked by the real Docker tools.

`docker compose config` loads, validates and normalizes a compose file without an engine, and
BuildKit's Dockerfile checks (tests/compose/dockerfile-check) run without one too, so both run on
the build machines (tests/compose/install-tools.sh installs them). These tests assert on compose's
normalized JSON, not on our own reading of the YAML, and show that both tools really reject broken
files. A missing tool fails the tests: a validator that is not there validates nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
TEST_ENV_FILE = DEPLOY / "compose.test.env"
MAKEFILE = REPO_ROOT / "Makefile"
DOCKERFILE = DEPLOY / "Dockerfile"
SECRETS_DIR = DEPLOY / "secrets"

REGIONS = ("region_1", "region_2", "region_3")
MEMBERS_PER_REGION = 3
# The KRaft quorum's nodes by service name; each formats its own log on its first start.
BROKERS = ("kafka", "kafka-2", "kafka-3")
KAFKA_DIR = DEPLOY / "kafka"
KAFKA_MOUNT = "/etc/kafka/regionstore"
INFRASTRUCTURE = (*BROKERS, "redis", "redis-idempotency")
APP_SERVICES = {
    "gateway": ("regionstore_gateway", 8000),
    "writer": ("regionstore_writer", 8101),
    "replicator": ("regionstore_replicator", 8102),
    "recovery": ("regionstore_recovery", 8103),
}
INSTALL_HINT = (
    "Docker Compose v2 or newer is required to validate deploy/compose.yaml: "
    "run `bash tests/compose/install-tools.sh` (builds the `docker compose` plugin with Go)"
)
TOOLS_DIR = Path(
    os.environ.get("REGIONSTORE_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "regionstore" / "tools"
)

Config = dict[str, Any]
Service = dict[str, Any]


def compose_env() -> dict[str, str]:
    # Only what compose needs to find its plugin: REGIONSTORE_*, COMPOSE_* or KAFKA_CLUSTER_ID
    # from the caller's shell must not change what is validated.
    keep = ("PATH", "HOME", "DOCKER_CONFIG")
    return {key: os.environ[key] for key in keep if key in os.environ}


@pytest.fixture(scope="session")
def compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(f"the docker CLI is not installed. {INSTALL_HINT}")
    version = subprocess.run(
        [docker, "compose", "version"],
        capture_output=True,
        text=True,
        env=compose_env(),
        check=False,
    )
    found = re.search(r"version v?(\d+)\.", version.stdout)
    if version.returncode != 0 or found is None:
        output = (version.stderr or version.stdout).strip()
        pytest.fail(f"`docker compose` is not available ({output}). {INSTALL_HINT}")
    if int(found.group(1)) < 2:
        pytest.fail(f"{version.stdout.strip()} is too old. {INSTALL_HINT}")
    return [docker, "compose"]


def run_config(
    compose: list[str], compose_file: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose, "-f", str(compose_file), "config", *args],
        capture_output=True,
        text=True,
        env=compose_env(),
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config(compose: list[str]) -> Config:
    result = run_config(compose, COMPOSE_FILE, "--format", "json")
    assert result.returncode == 0, result.stderr
    loaded: Config = json.loads(result.stdout)
    return loaded


@pytest.fixture(scope="module")
def services(config: Config) -> dict[str, Service]:
    found: dict[str, Service] = config["services"]
    return found


def is_one_shot(service: Service) -> bool:
    return service.get("restart") == "no"


def members_of(services: dict[str, Service], region: str) -> dict[str, Service]:
    return {
        name: service
        for name, service in services.items()
        if (service.get("command") or [])[:3] == ["mongod", "--replSet", region]
    }


def init_service_of(services: dict[str, Service], region: str) -> tuple[str, Service]:
    inits = [
        (name, service)
        for name, service in services.items()
        if is_one_shot(service) and service.get("environment", {}).get("RS_NAME") == region
    ]
    assert len(inits) == 1, f"{region} needs exactly one replica-set init service, has {inits}"
    return inits[0]


def published(service: Service) -> dict[int, tuple[str, int]]:
    """Container port -> (host ip, host port)."""
    return {
        port["target"]: (port.get("host_ip", ""), int(port["published"]))
        for port in service.get("ports", [])
    }


def kafka_config(service: Service) -> dict[str, str]:
    """A broker's server.properties as kafka/start.sh writes it: the shared file, then the
    node's own lines of the script with the node's hostname and environment put in."""
    config = {}
    for line in (KAFKA_DIR / "server.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            config[key] = value
    env = service["environment"]
    script = (KAFKA_DIR / "start.sh").read_text()
    for line in re.findall(r'"((?:node\.id|advertised\.listeners)=[^"]*)"', script):
        line = (
            line.replace("$KAFKA_NODE_ID", env["KAFKA_NODE_ID"])
            .replace("$KAFKA_EXTERNAL_PORT", env["KAFKA_EXTERNAL_PORT"])
            .replace("$host", service["hostname"])
        )
        key, _, value = line.partition("=")
        config[key] = value
    return config


def listeners(value: str) -> dict[str, str]:
    """NAME://address,... -> {NAME: address}."""
    return dict(item.split("://", 1) for item in value.split(","))


def unescape(value: str) -> str:
    # `config` prints literal dollars escaped again, as `$$`.
    return value.replace("$$", "$")


def redis_server_command(redis: Service) -> list[str]:
    """The redis-server arguments of the start script (`sh -c SCRIPT`)."""
    assert redis["command"][:2] == ["sh", "-c"]
    script = unescape(redis["command"][2])
    line = next(line for line in script.splitlines() if "redis-server" in line)
    words = shlex.split(line)
    return words[words.index("redis-server") :]


def secret_sources(service: Service) -> dict[str, str]:
    """Secret name -> where the container sees it."""
    return {
        secret["source"]: secret["target"]
        if secret["target"].startswith("/")
        else f"/run/secrets/{secret['target']}"
        for secret in service.get("secrets", [])
    }


class TestValidation:
    def test_the_file_is_valid(self, compose: list[str]) -> None:
        result = run_config(compose, COMPOSE_FILE, "--quiet")

        assert result.returncode == 0, result.stderr

    @pytest.mark.parametrize(
        ("breakage", "expected_error"),
        [
            pytest.param(
                lambda text: text.replace(
                    "  gateway:\n    <<: *app\n",
                    "  gateway:\n    <<: *app\n    depends_on:\n"
                    "      ghost-service: {condition: service_healthy}\n",
                ),
                'undefined service "ghost-service"',
                id="undefined-dependency",
            ),
            pytest.param(
                lambda text: text.replace('["redis-data:/data"]', '["ghost-volume:/data"]'),
                "undefined volume ghost-volume",
                id="undefined-volume",
            ),
            pytest.param(
                lambda text: text.replace(
                    "condition: service_completed_successfully", "condition: service_done", 1
                ),
                "condition value must be one of",
                id="unknown-condition",
            ),
        ],
    )
    def test_a_broken_copy_is_rejected(
        self,
        compose: list[str],
        tmp_path: Path,
        breakage: Callable[[str], str],
        expected_error: str,
    ) -> None:
        original = COMPOSE_FILE.read_text()
        broken = breakage(original)
        assert broken != original, "the breakage no longer applies to deploy/compose.yaml"
        shutil.copytree(DEPLOY / "mongo", tmp_path / "mongo")
        intact_copy = tmp_path / "intact.yaml"
        intact_copy.write_text(original)
        broken_copy = tmp_path / "broken.yaml"
        broken_copy.write_text(broken)

        intact = run_config(compose, intact_copy, "--quiet")
        rejected = run_config(compose, broken_copy, "--quiet")

        assert intact.returncode == 0, intact.stderr
        assert rejected.returncode != 0
        assert expected_error in rejected.stderr


class TestEveryService:
    def test_long_running_services_have_a_healthcheck(self, services: dict[str, Service]) -> None:
        for name, service in services.items():
            if is_one_shot(service):
                continue
            healthcheck = service.get("healthcheck", {})
            assert not healthcheck.get("disable"), name
            assert healthcheck.get("test", [""])[0] in ("CMD", "CMD-SHELL"), name

    def test_long_running_services_restart_unless_stopped(
        self, services: dict[str, Service]
    ) -> None:
        for name, service in services.items():
            if not is_one_shot(service):
                assert service["restart"] == "unless-stopped", name

    def test_one_shot_services_are_awaited_by_a_long_running_one(
        self, services: dict[str, Service]
    ) -> None:
        # `up --wait` counts an exited container as a failure unless a running service waits for
        # it with service_completed_successfully.
        awaited = {
            dependency
            for service in services.values()
            if not is_one_shot(service)
            for dependency, spec in service.get("depends_on", {}).items()
            if spec["condition"] == "service_completed_successfully"
        }
        one_shots = {name for name, service in services.items() if is_one_shot(service)}

        assert one_shots
        assert one_shots <= awaited

    def test_images_are_pinned(self, services: dict[str, Service]) -> None:
        for name, service in services.items():
            image = service["image"]
            assert ":" in image, name
            assert not image.endswith(":latest"), name

    def test_data_lives_in_named_volumes(
        self, config: Config, services: dict[str, Service]
    ) -> None:
        for name, service in services.items():
            for mount in service.get("volumes", []):
                if mount["type"] == "bind":
                    # Only the repository's own files are bind-mounted, read-only, and never
                    # a secret (those are Docker secrets).
                    source = Path(mount["source"])
                    assert source.is_relative_to(DEPLOY), name
                    assert not source.is_relative_to(SECRETS_DIR), name
                    assert source.exists(), name
                    assert mount.get("read_only") is True, name
                    continue
                assert mount["type"] == "volume", name
                assert mount["source"] in config["volumes"], name

    def test_only_the_gateway_is_published_beyond_loopback(
        self, services: dict[str, Service]
    ) -> None:
        for name, service in services.items():
            for host_ip, _ in published(service).values():
                if name != "gateway":
                    assert host_ip == "127.0.0.1", name

    def test_no_secret_is_written_into_the_file(self, services: dict[str, Service]) -> None:
        secret_name = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", re.IGNORECASE)
        for name, service in services.items():
            for key, value in service.get("environment", {}).items():
                # A *_FILE variable names a mounted secret, not a secret.
                if key.endswith("_FILE"):
                    assert (value or "").startswith("/run/secrets/"), f"{name}: {key}"
                    continue
                assert not secret_name.search(key), f"{name}: {key} must come from the caller"
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value or ""), f"{name}: {key}"

    def test_no_password_is_written_into_the_text(self) -> None:
        text = COMPOSE_FILE.read_text()

        assert not re.search(r"://[^/@\s$]+:[^/@\s$]+@", text), "a URL with a password"
        values = re.findall(r'password\s*=\s*"?([^\s\]"]*)', text, re.IGNORECASE)
        assert values
        # A shell variable read from a secret, or the placeholder of a comment.
        assert all(value.startswith("$") or value == "..." for value in values), values
        # Redis ACL passwords: `>plaintext` or `#sha256`, other than the one read at start-up.
        assert not re.search(r"\son\s+[>#][0-9A-Za-z]", text)
        assert not re.search(r"[0-9a-f]{32,}", text), "something that looks like a key"


class TestRegionalStores:
    @pytest.mark.parametrize("region", REGIONS)
    def test_each_region_is_a_replica_set_of_three(
        self, services: dict[str, Service], region: str
    ) -> None:
        members = members_of(services, region)

        assert len(members) == MEMBERS_PER_REGION
        for name, member in members.items():
            assert member["image"].startswith("mongo:8.0"), name
            assert "--bind_ip_all" in member["command"], name
            assert member["healthcheck"]["test"] == [
                "CMD",
                "mongosh",
                "--quiet",
                "--eval",
                "db.adminCommand('ping')",
            ]
            (mount,) = [m for m in member["volumes"] if m["target"] == "/data/db"]
            assert mount["type"] == "volume", name
        sources = [m["source"] for member in members.values() for m in member["volumes"]]
        assert len(set(sources)) == len(sources), "members must not share a volume"

    @pytest.mark.parametrize("region", REGIONS)
    def test_each_region_has_an_init_that_waits_for_its_members(
        self, services: dict[str, Service], region: str
    ) -> None:
        members = members_of(services, region)
        name, init = init_service_of(services, region)

        assert init["command"][0] == "mongosh"
        assert "/docker-init/init-replica-set.js" in init["command"]
        first_member = init["environment"]["RS_MEMBERS"].split(",")[0].split(":")[0]
        assert f"mongodb://{first_member}:27017/?directConnection=true" in init["command"]
        assert {m.split(":")[0] for m in init["environment"]["RS_MEMBERS"].split(",")} == set(
            members
        )
        assert init["depends_on"] == {
            member: {"condition": "service_healthy", "required": True} for member in members
        }, name

    @pytest.mark.parametrize("region", REGIONS)
    def test_one_member_per_region_is_reachable_from_the_host(
        self, services: dict[str, Service], region: str
    ) -> None:
        _, init = init_service_of(services, region)
        preferred = init["environment"]["RS_MEMBERS"].split(",")[0].split(":")[0]

        reachable = [name for name in members_of(services, region) if published(services[name])]

        # The first member is the one the init script gives priority, so it is the primary.
        assert reachable == [preferred]
        assert published(services[preferred])[27017][0] == "127.0.0.1"


class TestKafka:
    @pytest.mark.parametrize("name", BROKERS)
    def test_runs_the_start_script_with_the_config_file(
        self, services: dict[str, Service], name: str
    ) -> None:
        # Kafka's own scripts and a file, not one image's environment conventions.
        kafka = services[name]
        mount = next(m for m in kafka["volumes"] if m["target"] == KAFKA_MOUNT)

        assert Path(mount["source"]) == KAFKA_DIR
        assert mount["read_only"] is True
        assert kafka["entrypoint"] == ["/bin/bash", f"{KAFKA_MOUNT}/start.sh"]
        script = (KAFKA_DIR / "start.sh").read_text()
        assert f"cat {KAFKA_MOUNT}/server.properties" in script
        assert 'exec /opt/kafka/bin/kafka-server-start.sh "$config"' in script
        assert not any(
            key.startswith("KAFKA_")
            and key not in {"KAFKA_NODE_ID", "KAFKA_EXTERNAL_PORT", "KAFKA_HEAP_OPTS"}
            for key in kafka["environment"]
        )

    def test_topics_are_never_created_by_accident(self, services: dict[str, Service]) -> None:
        assert kafka_config(services["kafka"])["auto.create.topics.enable"] == "false"

    def test_is_one_quorum_of_three_kraft_nodes(self, services: dict[str, Service]) -> None:
        configs = [kafka_config(services[name]) for name in BROKERS]
        voters = ",".join(f"{n}@{name}:9093" for n, name in enumerate(BROKERS, start=1))

        assert [c["node.id"] for c in configs] == ["1", "2", "3"]
        assert len({services[name]["environment"]["CLUSTER_ID"] for name in BROKERS}) == 1
        for name, config in zip(BROKERS, configs, strict=True):
            assert services[name]["image"].startswith("apache/kafka:4.1."), name
            assert config["process.roles"] == "broker,controller", name
            assert config["controller.quorum.voters"] == voters, name

    def test_replicates_every_topic_three_times_and_acknowledges_on_two(
        self, services: dict[str, Service]
    ) -> None:
        config = kafka_config(services["kafka"])

        assert config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == "2"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"
        assert config["unclean.leader.election.enable"] == "false"

    @pytest.mark.parametrize("name", BROKERS)
    def test_brokers_replicate_over_their_service_names_with_scram(
        self, services: dict[str, Service], name: str
    ) -> None:
        config = kafka_config(services[name])
        listener = config["inter.broker.listener.name"]
        protocols = dict(
            item.split(":") for item in config["listener.security.protocol.map"].split(",")
        )

        assert listeners(config["advertised.listeners"])[listener] == f"{name}:9096"
        assert protocols[listener] == "SASL_PLAINTEXT"
        assert config["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
        assert "kafka_password" in secret_sources(services[name])
        script = (KAFKA_DIR / "start.sh").read_text()
        assert f"listener.name.{listener.lower()}.scram-sha-512.sasl.jaas.config=" in script

    def test_listens_inside_the_network_and_for_the_host(
        self, services: dict[str, Service]
    ) -> None:
        host_ports = set()
        for name in BROKERS:
            kafka = services[name]
            advertised = listeners(kafka_config(kafka)["advertised.listeners"])
            host, _, port = advertised["EXTERNAL"].rpartition(":")

            assert advertised["INTERNAL"] == f"{name}:9092"
            assert host == "127.0.0.1"
            assert published(kafka)[9094] == ("127.0.0.1", int(port))
            host_ports.add(port)
        assert len(host_ports) == len(BROKERS)

    @pytest.mark.parametrize("name", BROKERS)
    def test_keeps_its_log_in_a_named_volume(self, services: dict[str, Service], name: str) -> None:
        kafka = services[name]
        log_dir = kafka_config(kafka)["log.dirs"]

        assert [m["type"] for m in kafka["volumes"] if m["target"] == log_dir] == ["volume"]

    def test_each_node_has_a_volume_of_its_own(self, services: dict[str, Service]) -> None:
        log_dir = kafka_config(services["kafka"])["log.dirs"]
        sources = [
            m["source"]
            for name in BROKERS
            for m in services[name]["volumes"]
            if m["target"] == log_dir
        ]

        assert len(set(sources)) == len(BROKERS)


class TestRedis:
    def test_notifies_keyspace_events_and_appends_to_its_log(
        self, services: dict[str, Service]
    ) -> None:
        server = redis_server_command(services["redis"])

        assert server[server.index("--appendonly") + 1] == "yes"
        assert server[server.index("--notify-keyspace-events") + 1] == "K$"

    @pytest.mark.parametrize("name", ["redis", "redis-idempotency"])
    def test_runs_the_server_as_the_redis_user(
        self, services: dict[str, Service], name: str
    ) -> None:
        # The server itself, not an image's entrypoint script; never as root.
        script = unescape(services[name]["command"][2])

        assert services[name]["user"] == "redis"
        assert "exec redis-server " in script

    @pytest.mark.parametrize("name", ["redis", "redis-idempotency"])
    def test_is_checked_and_persistent(self, services: dict[str, Service], name: str) -> None:
        redis = services[name]

        assert redis["image"].startswith("redis:7")
        assert "redis-cli" in redis["healthcheck"]["test"][1]
        assert [m["type"] for m in redis["volumes"] if m["target"] == "/data"] == ["volume"]
        assert "--appendonly" in redis_server_command(redis)

    def test_the_control_plane_never_evicts_and_the_records_have_a_budget_of_their_own(
        self, services: dict[str, Service]
    ) -> None:
        control = redis_server_command(services["redis"])
        records = redis_server_command(services["redis-idempotency"])

        assert control[control.index("--maxmemory-policy") + 1] == "noeviction"
        assert "--maxmemory" in control
        # Only keys with a TTL may go, nearest expiry first: every record has one.
        assert records[records.index("--maxmemory-policy") + 1] == "volatile-ttl"
        assert "--maxmemory" in records
        volumes = {
            m["source"]
            for name in ("redis", "redis-idempotency")
            for m in services[name]["volumes"]
            if m["target"] == "/data"
        }
        assert len(volumes) == 2

    def test_the_gateway_keeps_its_records_in_their_own_redis(
        self, services: dict[str, Service]
    ) -> None:
        env = services["gateway"]["environment"]

        assert env["REGIONSTORE_IDEMPOTENCY_REDIS__URL"] == "redis://redis-idempotency:6379/0"
        assert secret_sources(services["gateway"])["idempotency_redis_password"] == (
            "/run/secrets/regionstore_idempotency_redis__password"
        )
        assert set(secret_sources(services["redis-idempotency"])) == {"idempotency_redis_password"}


class TestAppServices:
    def test_the_four_services_run_from_one_image(self, services: dict[str, Service]) -> None:
        images = {services[name]["image"] for name in APP_SERVICES}
        builds = [services[name]["build"] for name in APP_SERVICES]

        assert len(images) == 1
        for build in builds:
            assert build == {"context": str(REPO_ROOT), "dockerfile": "deploy/Dockerfile"}

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_runs_its_module_on_its_port(self, services: dict[str, Service], name: str) -> None:
        module, port = APP_SERVICES[name]
        service = services[name]

        assert service["command"] == ["python", "-m", module]
        assert service["environment"]["REGIONSTORE_HTTP__HOST"] == "0.0.0.0"
        assert service["environment"]["REGIONSTORE_HTTP__PORT"] == str(port)
        assert published(service)[port][1] == port
        assert "/readyz" in " ".join(service["healthcheck"]["test"])

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_starts_after_kafka_redis_and_every_replica_set(
        self, services: dict[str, Service], name: str
    ) -> None:
        expected = dict.fromkeys(INFRASTRUCTURE, "service_healthy") | {
            init_service_of(services, region)[0]: "service_completed_successfully"
            for region in REGIONS
        }

        conditions = {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

        assert conditions == expected

    @pytest.mark.parametrize("region", REGIONS)
    def test_reaches_each_region_through_its_replica_set(
        self, services: dict[str, Service], region: str
    ) -> None:
        members = sorted(members_of(services, region))
        key = f"REGIONSTORE_STORES__{region.upper()}"

        for name in APP_SERVICES:
            uri = services[name]["environment"][key]
            hosts, _, options = uri.removeprefix("mongodb://").partition("/?")
            assert sorted(host.split(":")[0] for host in hosts.split(",")) == members, name
            assert f"replicaSet={region}" in options.split("&"), name
            assert "w=majority" in options.split("&"), name

    def test_reach_kafka_and_redis_by_service_name(self, services: dict[str, Service]) -> None:
        for name in APP_SERVICES:
            env = services[name]["environment"]
            assert env["REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"] == ",".join(
                f"{broker}:9092" for broker in BROKERS
            ), name
            assert env["REGIONSTORE_KAFKA__REPLICATION_FACTOR"] == "3", name
            assert env["REGIONSTORE_REDIS__URL"] == "redis://redis:6379/0", name


class TestCredentials:
    """Nothing runs without its credentials, and every credential is a git-ignored secret."""

    def test_every_secret_is_a_git_ignored_file_that_make_creates(self, config: Config) -> None:
        files = {name: Path(spec["file"]) for name, spec in config["secrets"].items()}
        made = re.search(r"^COMPOSE_SECRETS := (.+)$", MAKEFILE.read_text(), re.MULTILINE)
        assert made is not None

        assert set(files) == set(made.group(1).split())
        for name, path in files.items():
            assert path.parent == SECRETS_DIR, name
            ignored = subprocess.run(
                ["git", "check-ignore", "--quiet", "--no-index", str(path)],
                cwd=REPO_ROOT,
                check=False,
            )
            assert ignored.returncode == 0, f"{path} is not git-ignored"
        tracked = subprocess.run(
            ["git", "ls-files", str(SECRETS_DIR)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert tracked.stdout.split() in ([], ["deploy/secrets/.gitignore"])

    @pytest.mark.parametrize("region", REGIONS)
    def test_members_authenticate_each_other_and_make_a_root_user(
        self, services: dict[str, Service], region: str
    ) -> None:
        for name, member in members_of(services, region).items():
            command = member["command"]
            keyfile = command[command.index("--keyFile") + 1]
            entrypoint = " ".join(unescape(part) for part in member["entrypoint"])
            env = member["environment"]

            assert f"/run/secrets/mongo_keyfile {keyfile}" in entrypoint, name
            assert "exec docker-entrypoint.sh" in entrypoint, name
            assert env["MONGO_INITDB_ROOT_USERNAME"], name
            assert env["MONGO_INITDB_ROOT_PASSWORD_FILE"] == "/run/secrets/mongo_root_password"
            assert {"mongo_keyfile", "mongo_root_password"} <= set(secret_sources(member)), name

    @pytest.mark.parametrize("region", REGIONS)
    def test_the_init_logs_in_as_root_and_makes_the_services_user(
        self, services: dict[str, Service], region: str
    ) -> None:
        name, init = init_service_of(services, region)
        env = init["environment"]
        member = services[env["RS_MEMBERS"].split(",")[0].split(":")[0]]
        mounted = secret_sources(init)

        assert env["ROOT_USERNAME"] == member["environment"]["MONGO_INITDB_ROOT_USERNAME"]
        assert env["ROOT_PASSWORD_FILE"] == mounted["mongo_root_password"], name
        assert env["APP_PASSWORD_FILE"] == mounted["store_password"], name
        for app in APP_SERVICES:
            app_env = services[app]["environment"]
            assert env["APP_USERNAME"] == app_env["REGIONSTORE_STORE__USERNAME"], app
            assert env["APP_DATABASE"] == app_env.get("REGIONSTORE_STORE__DATABASE", "regionstore")

    @pytest.mark.parametrize("name", ["redis", "redis-idempotency"])
    def test_redis_has_one_user_and_no_default_one(
        self, services: dict[str, Service], name: str
    ) -> None:
        redis = services[name]
        script = unescape(redis["command"][2])
        server = redis_server_command(redis)
        acl_file = server[server.index("--aclfile") + 1]
        user = services["writer"]["environment"]["REGIONSTORE_REDIS__USERNAME"]

        # `default` keeps its rights (the AOF is replayed as it) but has no password at all.
        assert f"user default on resetpass ~* &* +@all\\nuser {user} on #%s" in script
        assert f">{acl_file}" in script
        (password,) = secret_sources(redis)
        assert f"/run/secrets/{password}" in script
        healthcheck = unescape(redis["healthcheck"]["test"][1])
        assert f"--user {user}" in healthcheck
        assert "REDISCLI_AUTH=" in healthcheck
        assert f"/run/secrets/{password}" in healthcheck

    @pytest.mark.parametrize("broker", BROKERS)
    def test_kafka_clients_log_in_with_scram(
        self, services: dict[str, Service], broker: str
    ) -> None:
        config = kafka_config(services[broker])
        protocols = dict(
            item.split(":") for item in config["listener.security.protocol.map"].split(",")
        )
        script = (KAFKA_DIR / "start.sh").read_text()

        assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        for listener, address in listeners(config["advertised.listeners"]).items():
            if protocols[listener] == "PLAINTEXT":
                # Only inside the container: the broker itself and its healthcheck.
                assert address.startswith("127.0.0.1:"), listener
                assert not any(
                    p["target"] == int(address.split(":")[1])
                    for p in services[broker].get("ports", [])
                ), listener
            else:
                assert protocols[listener] in ("SASL_PLAINTEXT", "SASL_SSL"), listener
                # Each SASL listener has its login module (the brokers' side of SCRAM).
                jaas = f"listener.name.{listener.lower()}.scram-sha-512.sasl.jaas.config"
                assert jaas in config or f"{jaas}=" in script, listener

    def test_kafka_storage_is_formatted_with_the_services_user(
        self, services: dict[str, Service]
    ) -> None:
        script = (KAFKA_DIR / "start.sh").read_text()
        user = services["writer"]["environment"]["REGIONSTORE_KAFKA__SASL_USERNAME"]

        assert f'--add-scram "SCRAM-SHA-512=[name={user},password=$password]"' in script
        assert 'password="$(cat /run/secrets/kafka_password)"' in script
        assert '--ignore-formatted --cluster-id "$CLUSTER_ID"' in script
        assert script.index("kafka-storage.sh format") < script.index("kafka-server-start.sh")

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_services_run_in_production_with_every_credential(
        self, services: dict[str, Service], name: str
    ) -> None:
        env = services[name]["environment"]
        mounted = secret_sources(services[name])

        assert env["REGIONSTORE_ENVIRONMENT"] == "production"
        assert env["REGIONSTORE_KAFKA__SECURITY_PROTOCOL"].startswith("SASL_")
        assert mounted["kafka_password"] == "/run/secrets/regionstore_kafka__sasl_password"
        assert mounted["redis_password"] == "/run/secrets/regionstore_redis__password"
        assert mounted["store_password"] == "/run/secrets/regionstore_store__password"
        if name == "gateway":
            assert mounted["auth_secret"] == "/run/secrets/regionstore_auth__secret"

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_the_production_settings_accept_what_a_service_gets(
        self,
        services: dict[str, Service],
        name: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # The services' own settings check, with the service's environment and its secrets
        # mounted as compose mounts them.
        for source, target in secret_sources(services[name]).items():
            (tmp_path / Path(target).name).write_text(f"{source}-value\n")
        for key in list(os.environ):
            if key.startswith("REGIONSTORE_"):
                monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, unescape(value))

        settings = CommonSettings(_secrets_dir=tmp_path)

        assert settings.environment == "production"
        assert settings.kafka.sasl_password.get_secret_value() == "kafka_password-value"
        assert settings.redis.password.get_secret_value() == "redis_password-value"
        assert settings.store.password.get_secret_value() == "store_password-value"

    @pytest.mark.parametrize("name", ["gateway", "metrics-key"])
    def test_the_gateway_settings_get_the_idempotency_redis_login(
        self,
        services: dict[str, Service],
        name: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for key in list(os.environ):
            if key.startswith("REGIONSTORE_"):
                monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, unescape(value))
        with pytest.raises(ValidationError) as refused:
            GatewaySettings(_secrets_dir=tmp_path)
        assert ("idempotency_redis",) in {e["loc"] for e in refused.value.errors()}
        # Long enough for the auth secret's minimum.
        for source, target in secret_sources(services[name]).items():
            (tmp_path / Path(target).name).write_text(f"{source}-value-of-32-characters-or-more\n")

        settings = GatewaySettings(_secrets_dir=tmp_path)

        records = settings.idempotency_redis
        assert records.password.get_secret_value() == (
            "idempotency_redis_password-value-of-32-characters-or-more"
        )
        assert records.username == settings.redis.username

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_a_service_without_its_secrets_refuses_to_start(
        self,
        services: dict[str, Service],
        name: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for key in list(os.environ):
            if key.startswith("REGIONSTORE_"):
                monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, unescape(value))

        with pytest.raises(ValidationError) as refused:
            CommonSettings(_secrets_dir=tmp_path)

        assert {e["loc"] for e in refused.value.errors()} == {("kafka",), ("redis",), ("stores",)}


FAKE_SECRETS = {
    "kafka_password": "kafka-pw-from-the-secret",
    "redis_password": "redis-pw-from-the-secret",
    "idempotency_redis_password": "records-pw-from-the-secret",
    "mongo_root_password": "root-pw-from-the-secret",
}


@pytest.fixture(scope="module")
def host_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """deploy/compose.test.env as a shell sources it, with fake secrets in COMPOSE_SECRETS."""
    secrets = tmp_path_factory.mktemp("secrets")
    for name, value in FAKE_SECRETS.items():
        (secrets / name).write_text(value)
    sourced = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; set +a; env -0', "_", str(TEST_ENV_FILE)],
        env={"PATH": os.environ["PATH"], "COMPOSE_SECRETS": str(secrets)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(item.split("=", 1) for item in sourced.stdout.split("\0") if item)


class TestHostTestSettings:
    """deploy/compose.test.env points the integration tests at what compose publishes."""

    def test_marks_the_stack_as_external(self, host_env: dict[str, str]) -> None:
        # tests/stack.py then leaves the deployment's processes alone.
        assert host_env["REGIONSTORE_STACK"] == "external"

    def test_kafka_is_the_external_listener(
        self, services: dict[str, Service], host_env: dict[str, str]
    ) -> None:
        servers = host_env["REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"].split(",")

        assert len(servers) == len(BROKERS)
        for server, name in zip(servers, BROKERS, strict=True):
            port = int(server.rpartition(":")[2])
            advertised = listeners(kafka_config(services[name])["advertised.listeners"])
            assert advertised["EXTERNAL"] == server, name
            assert port in {hp for _, hp in published(services[name]).values()}, name
        assert host_env["REGIONSTORE_KAFKA__REPLICATION_FACTOR"] == "3"

    def test_kafka_logs_in_as_the_services_do(
        self, services: dict[str, Service], host_env: dict[str, str]
    ) -> None:
        app = services["writer"]["environment"]

        for field in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME"):
            key = f"REGIONSTORE_KAFKA__{field}"
            assert host_env[key] == app[key], key
        assert host_env["REGIONSTORE_KAFKA__SASL_PASSWORD"] == FAKE_SECRETS["kafka_password"]

    def test_redis_is_the_published_port_with_the_services_login(
        self, services: dict[str, Service], host_env: dict[str, str]
    ) -> None:
        user = services["writer"]["environment"]["REGIONSTORE_REDIS__USERNAME"]

        assert host_env["REGIONSTORE_REDIS__URL"] == (
            f"redis://{user}:{FAKE_SECRETS['redis_password']}@127.0.0.1:"
            f"{published(services['redis'])[6379][1]}/0"
        )

    def test_the_idempotency_redis_is_its_published_port_with_its_login(
        self, services: dict[str, Service], host_env: dict[str, str]
    ) -> None:
        user = services["gateway"]["environment"]["REGIONSTORE_IDEMPOTENCY_REDIS__USERNAME"]

        assert host_env["REGIONSTORE_IDEMPOTENCY_REDIS__URL"] == (
            f"redis://{user}:{FAKE_SECRETS['idempotency_redis_password']}@127.0.0.1:"
            f"{published(services['redis-idempotency'])[6379][1]}/0"
        )

    def test_the_round_never_reaches_a_local_stacks_toxiproxy(
        self, services: dict[str, Service], host_env: dict[str, str]
    ) -> None:
        # The chaos round heals every link of the Toxiproxy on TOXIPROXY_PORT when it ends.
        port = int(host_env["TOXIPROXY_PORT"])
        published_ports = {hp for s in services.values() for _, hp in published(s).values()}
        ci_ports = {
            int(line.partition("=")[2])
            for line in (DEPLOY / "compose.ci-ports.env").read_text().splitlines()
            if line.startswith("HOST_PORT_")
        }

        assert port != DEFAULT_PORTS["TOXIPROXY_PORT"]
        assert port not in published_ports | ci_ports | set(DEFAULT_PORTS.values())

    @pytest.mark.parametrize("region", REGIONS)
    def test_each_region_is_its_published_member_as_root(
        self, services: dict[str, Service], host_env: dict[str, str], region: str
    ) -> None:
        _, init = init_service_of(services, region)
        preferred = init["environment"]["RS_MEMBERS"].split(",")[0].split(":")[0]
        host_port = published(services[preferred])[27017][1]
        root = init["environment"]["ROOT_USERNAME"]

        uri = host_env[f"REGIONSTORE_STORES__{region.upper()}"]

        login = f"{root}:{FAKE_SECRETS['mongo_root_password']}"
        assert uri.startswith(f"mongodb://{login}@127.0.0.1:{host_port}/?")
        assert "directConnection=true" in uri

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_each_service_url_is_its_published_port(
        self, services: dict[str, Service], host_env: dict[str, str], name: str
    ) -> None:
        env = host_env
        _, port = APP_SERVICES[name]

        assert env[f"REGIONSTORE_{name.upper()}_URL"] == f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def dockerfile_check() -> Path:
    checker = TOOLS_DIR / "dockerfile-check"
    if not checker.is_file():
        pytest.fail(
            f"{checker} is missing: run `bash tests/compose/install-tools.sh` "
            "(builds BuildKit's Dockerfile checks with Go)"
        )
    return checker


def run_dockerfile_check(checker: Path, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checker), str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )


class TestDockerfileChecks:
    """BuildKit's own checks, the ones `docker build --check` runs, without an engine."""

    def test_the_dockerfile_passes(self, dockerfile_check: Path) -> None:
        result = run_dockerfile_check(dockerfile_check, DOCKERFILE)

        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize(
        ("breakage", "expected_error"),
        [
            pytest.param(
                lambda text: text.replace("AS runtime", "as runtime"),
                "FromAsCasing",
                id="keyword-casing",
            ),
            pytest.param(
                lambda text: text.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=$UNDEFINED_FLAG"),
                "UndefinedVar",
                id="undefined-variable",
            ),
            pytest.param(
                lambda text: text.replace("COPY --from=uv", "COPPY --from=uv"),
                "unknown instruction",
                id="unknown-instruction",
            ),
        ],
    )
    def test_a_broken_copy_is_rejected(
        self,
        dockerfile_check: Path,
        tmp_path: Path,
        breakage: Callable[[str], str],
        expected_error: str,
    ) -> None:
        original = DOCKERFILE.read_text()
        broken = breakage(original)
        assert broken != original, "the breakage no longer applies to deploy/Dockerfile"
        broken_copy = tmp_path / "Dockerfile"
        broken_copy.write_text(broken)

        result = run_dockerfile_check(dockerfile_check, broken_copy)

        assert result.returncode != 0
        assert expected_error in result.stdout + result.stderr


class TestImage:
    """The image cannot be built here; these catch the drift that would break the build."""

    def test_copies_every_workspace_member(self) -> None:
        text = DOCKERFILE.read_text()
        workspace = (REPO_ROOT / "pyproject.toml").read_text()
        members_line = re.search(r"members\s*=\s*\[([^\]]*)\]", workspace)
        assert members_line is not None
        members = re.findall(r'"([^"]+)"', members_line.group(1))

        assert members
        for member in members:
            assert f"COPY {member}/pyproject.toml {member}/" in text, member
            assert f"COPY {member}/ {member}/" in text, member

    def test_installs_from_the_lock_without_dev_tools(self) -> None:
        syncs = re.findall(r"uv sync[^\n]*", DOCKERFILE.read_text())

        assert syncs
        for sync in syncs:
            assert "--frozen" in sync
            assert "--no-dev" in sync

    def test_runs_unbuffered_as_a_non_root_user(self) -> None:
        text = DOCKERFILE.read_text()
        runtime = text[text.rindex("\nFROM ") :]

        assert re.search(r"^USER (?!root|0\b)\w+", runtime, re.MULTILINE)
        assert "PYTHONUNBUFFERED=1" in runtime
        assert "/readyz" in runtime

    def test_the_build_context_keeps_what_the_build_needs(self) -> None:
        ignored = {
            line.strip()
            for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }

        assert not ignored & {"uv.lock", "pyproject.toml", "*/src", "**/src"}
        assert {"**/.venv", ".git"} <= ignored
