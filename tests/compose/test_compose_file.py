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

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
TEST_ENV_FILE = DEPLOY / "compose.test.env"
DOCKERFILE = DEPLOY / "Dockerfile"

REGIONS = ("region_1", "region_2", "region_3")
MEMBERS_PER_REGION = 3
INFRASTRUCTURE = ("kafka", "redis")
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


def unescape(value: str) -> str:
    # `config` prints literal dollars escaped again, as `$$`.
    return value.replace("$$", "$")


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, raw = line.partition("=")
        (value,) = shlex.split(raw)
        values[key.strip()] = value
    return values


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
            assert healthcheck.get("test", [])[:1] == ["CMD"], name

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
                    # Only the init script is bind-mounted, read-only.
                    assert mount["source"] == str(DEPLOY / "mongo" / "init-replica-set.js"), name
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
                assert not secret_name.search(key), f"{name}: {key} must come from the caller"
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value or ""), f"{name}: {key}"


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
    def test_topics_are_never_created_by_accident(self, services: dict[str, Service]) -> None:
        assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    def test_is_a_single_kraft_node(self, services: dict[str, Service]) -> None:
        env = services["kafka"]["environment"]

        assert services["kafka"]["image"].startswith("apache/kafka:4.1.")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"

    def test_listens_inside_the_network_and_for_the_host(
        self, services: dict[str, Service]
    ) -> None:
        kafka = services["kafka"]
        advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")

        assert "PLAINTEXT://kafka:9092" in advertised
        assert "EXTERNAL://127.0.0.1:9094" in advertised
        assert published(kafka)[9094] == ("127.0.0.1", 9094)

    def test_keeps_its_log_in_a_named_volume(self, services: dict[str, Service]) -> None:
        kafka = services["kafka"]
        log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]

        assert [m["type"] for m in kafka["volumes"] if m["target"] == log_dir] == ["volume"]


class TestRedis:
    def test_notifies_keyspace_events_and_appends_to_its_log(
        self, services: dict[str, Service]
    ) -> None:
        command = [unescape(part) for part in services["redis"]["command"]]

        assert command[0] == "redis-server"
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--notify-keyspace-events") + 1] == "K$"

    def test_is_checked_and_persistent(self, services: dict[str, Service]) -> None:
        redis = services["redis"]

        assert redis["image"].startswith("redis:7")
        assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert [m["type"] for m in redis["volumes"] if m["target"] == "/data"] == ["volume"]


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
            assert env["REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092", name
            assert env["REGIONSTORE_KAFKA__REPLICATION_FACTOR"] == "1", name
            assert env["REGIONSTORE_REDIS__URL"] == "redis://redis:6379/0", name


class TestHostTestSettings:
    """deploy/compose.test.env points the integration tests at what compose publishes."""

    def test_marks_the_stack_as_external(self) -> None:
        # tests/stack.py then leaves the deployment's processes alone.
        assert read_env_file(TEST_ENV_FILE)["REGIONSTORE_STACK"] == "external"

    def test_kafka_is_the_external_listener(self, services: dict[str, Service]) -> None:
        env = read_env_file(TEST_ENV_FILE)
        host, _, port = env["REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS"].partition(":")

        assert f"EXTERNAL://{host}:{port}" in services["kafka"]["environment"][
            "KAFKA_ADVERTISED_LISTENERS"
        ].split(",")
        assert int(port) in {hp for _, hp in published(services["kafka"]).values()}

    def test_redis_is_the_published_port(self, services: dict[str, Service]) -> None:
        env = read_env_file(TEST_ENV_FILE)

        assert env["REGIONSTORE_REDIS__URL"] == (
            f"redis://127.0.0.1:{published(services['redis'])[6379][1]}/0"
        )

    @pytest.mark.parametrize("region", REGIONS)
    def test_each_region_is_its_published_member(
        self, services: dict[str, Service], region: str
    ) -> None:
        env = read_env_file(TEST_ENV_FILE)
        _, init = init_service_of(services, region)
        preferred = init["environment"]["RS_MEMBERS"].split(",")[0].split(":")[0]
        host_port = published(services[preferred])[27017][1]

        uri = env[f"REGIONSTORE_STORES__{region.upper()}"]

        assert uri.startswith(f"mongodb://127.0.0.1:{host_port}/?")
        assert "directConnection=true" in uri

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_each_service_url_is_its_published_port(
        self, services: dict[str, Service], name: str
    ) -> None:
        env = read_env_file(TEST_ENV_FILE)
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
