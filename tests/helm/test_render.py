"""What the rendered chart must hold, for region maps of 3 and 6: clock ids that never clash, no
secret in a manifest, every workload probed on paths the services serve, the gateway the only
thing reachable from outside the namespace, and settings the services themselves accept.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from regionstore_gateway.api.health import router as gateway_health
from regionstore_gateway.settings import GatewaySettings
from regionstore_recovery.settings import RecoverySettings
from regionstore_replicator.settings import ReplicatorSettings
from regionstore_shared.clock import MAX_NODE_ID
from regionstore_shared.regions import RegionMap, RegionSpec
from regionstore_shared.runtime import ServiceState, _health_app
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import _partitions, _topic_config, all_topics
from regionstore_writer.settings import WriterSettings
from tests.helm.chart import (
    FULLNAME,
    NAMESPACE,
    RELEASE,
    SECRET_NAMES,
    SERVICES,
    Manifest,
    Rendered,
    containers,
    labels_match,
    region_map,
    render,
    values,
)

SETTINGS: dict[str, type[CommonSettings]] = {
    "gateway": GatewaySettings,
    "writer": WriterSettings,
    "replicator": ReplicatorSettings,
    "recovery": RecoverySettings,
}
# The settings that are secret (SecretStr fields), as environment variables and as the files in
# /run/secrets that CommonSettings reads in their place.
SECRET_SETTINGS = {
    "kafka": "REGIONSTORE_KAFKA__SASL_PASSWORD",
    "redis": "REGIONSTORE_REDIS__PASSWORD",
    "idempotencyRedis": "REGIONSTORE_IDEMPOTENCY_REDIS__PASSWORD",
    "store": "REGIONSTORE_STORE__PASSWORD",
    "auth": "REGIONSTORE_AUTH__SECRET",
}
# Secrets the operators make, which the chart may name: Strimzi's CA certificate and the
# password it generates for KEDA's Kafka user.
OPERATOR_SECRETS = {f"{FULLNAME}-cluster-ca-cert", f"{FULLNAME}-lag-reader"}


@pytest.fixture(scope="module", params=[3, 6], ids=["3-regions", "6-regions"])
def regions(request: pytest.FixtureRequest) -> int:
    count: int = request.param
    return count


@pytest.fixture(scope="module")
def rendered(regions: int, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(values(regions), tmp_path_factory.mktemp("render"))


def env_of(rendered: Rendered, service: str) -> dict[str, str]:
    """A service container's environment: the ConfigMap it loads, then its own variables."""
    container = containers(rendered.deployment(service))[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= rendered.one("ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in container.get("env", []):
        assert "value" in variable, f"{service}: {variable['name']} is not a plain value"
        env[variable["name"]] = variable["value"]
    return env


def secret_files(rendered: Rendered, service: str) -> dict[str, tuple[str, str]]:
    """The files a service finds in /run/secrets: file name -> (Secret, key)."""
    pod = rendered.deployment(service)["spec"]["template"]["spec"]
    mounted = {
        mount["name"]
        for mount in containers(rendered.deployment(service))[0]["volumeMounts"]
        if mount["mountPath"] == "/run/secrets"
    }
    files = {}
    for volume in pod["volumes"]:
        if volume["name"] in mounted:
            for source in volume["projected"]["sources"]:
                for item in source["secret"]["items"]:
                    files[item["path"]] = (source["secret"]["name"], item["key"])
    return files


def settings_of(
    rendered: Rendered, service: str, monkeypatch: pytest.MonkeyPatch
) -> CommonSettings:
    """The service's own settings class, fed what the chart gives it, with stand-in secrets."""
    for name in list(os.environ):
        if name.startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    for name, value in env_of(rendered, service).items():
        monkeypatch.setenv(name, value)
    for file_name in secret_files(rendered, service):
        monkeypatch.setenv(file_name.upper(), "x" * 40)
    return SETTINGS[service]()


def test_each_service_accepts_its_settings_in_production(
    rendered: Rendered, regions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in SERVICES:
        settings = settings_of(rendered, service, monkeypatch)
        assert settings.environment == "production"
        assert settings.region_map.names == tuple(r["name"] for r in region_map(regions))
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.kafka.replication_factor == 3
        port = containers(rendered.deployment(service))[0]["ports"][0]["containerPort"]
        assert settings.http.port == port
        assert settings.http.host == "0.0.0.0"


def test_the_region_map_is_the_value_as_given(rendered: Rendered, regions: int) -> None:
    given = region_map(regions)
    assert json.loads(rendered.config["REGIONSTORE_REGIONS"]) == given
    RegionMap(RegionSpec.model_validate(spec) for spec in given)


def test_each_region_has_its_replica_set_and_its_uri(rendered: Rendered, regions: int) -> None:
    stores = rendered.of_kind("MongoDBCommunity")
    assert len(stores) == regions
    for spec in region_map(regions):
        name = f"{FULLNAME}-store-{spec['name'].replace('_', '-')}"
        store = rendered.one("MongoDBCommunity", name)
        assert store["spec"]["members"] == 3
        (user,) = store["spec"]["users"]
        assert user["passwordSecretRef"]["name"] == SECRET_NAMES["store"]
        hosts = ",".join(
            f"{name}-{i}.{name}-svc.{NAMESPACE}.svc.cluster.local:27017" for i in range(3)
        )
        uri = rendered.config[f"REGIONSTORE_STORES__{spec['name'].upper()}"]
        assert uri == f"mongodb://{hosts}/?replicaSet={name}&w=majority"
        budget = rendered.one("PodDisruptionBudget", name)
        assert budget["spec"]["selector"]["matchLabels"] == {"app": f"{name}-svc"}


def test_clock_ids_never_clash(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only gateways issue versions, and each leases its id from Redis: no id is written down.
    for workload in rendered.workloads():
        for container in containers(workload):
            for variable in container.get("env", []):
                if variable["name"] == "REGIONSTORE_NODE_ID":
                    assert workload["metadata"]["name"] == f"{FULLNAME}-gateway"
                    assert variable["value"] == "auto"
    assert "REGIONSTORE_NODE_ID" not in rendered.config
    settings = settings_of(rendered, "gateway", monkeypatch)
    assert isinstance(settings, GatewaySettings)
    assert settings.node_id == "auto"
    # The autoscaler owns the count, and never runs more gateways than there are ids, even with
    # a rollout's extra pod.
    gateway = rendered.deployment("gateway")
    assert "replicas" not in gateway["spec"]
    autoscaler = rendered.one("HorizontalPodAutoscaler", f"{FULLNAME}-gateway")
    surge = gateway["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert autoscaler["spec"]["maxReplicas"] + surge <= MAX_NODE_ID + 1


def test_no_secret_in_a_manifest(rendered: Rendered) -> None:
    assert not rendered.of_kind("Secret")
    secret_variables = set(SECRET_SETTINGS.values())
    assert not secret_variables & set(rendered.config)
    for workload in rendered.workloads():
        for container in containers(workload):
            for variable in container.get("env", []):
                assert variable["name"] not in secret_variables
                assert not re.search(r"(?i)password|secret", variable["name"])
    # No URI carries credentials, anywhere.
    assert not re.search(r"[a-z]+://[^/\s:@]+:[^/\s@]+@", rendered.text)
    # Every Secret named is one of those given, or one an operator makes.
    referenced = {name for doc in rendered.manifests for name in secret_references(doc)}
    assert referenced == set(SECRET_NAMES.values()) | OPERATOR_SECRETS


def secret_references(node: Any) -> Iterator[str]:
    """The names of the Secrets a manifest refers to, wherever it does."""
    if isinstance(node, list):
        for item in node:
            yield from secret_references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "secretName":
                yield value
            elif key in ("secret", "secretKeyRef", "passwordSecretRef") and "name" in value:
                yield value["name"]
            elif key == "secretTargetRef":
                yield from (target["name"] for target in value)
            else:
                yield from secret_references(value)


def test_secrets_reach_each_service_as_its_settings_files(rendered: Rendered) -> None:
    for service in SERVICES:
        gateway_only = {"auth", "idempotencyRedis"} if service == "gateway" else set()
        wanted = {"kafka", "redis", "store"} | gateway_only
        keys = {"auth": "auth-secret", "idempotencyRedis": "idempotency-redis-password"}
        assert secret_files(rendered, service) == {
            SECRET_SETTINGS[name].lower(): (SECRET_NAMES[name], keys.get(name, f"{name}-password"))
            for name in wanted
        }


def probe_path(container: Manifest, probe: str) -> str:
    path: str = container[probe]["httpGet"]["path"]
    assert container[probe]["httpGet"]["port"] == "http"
    return path


def test_every_workload_is_probed(rendered: Rendered) -> None:
    workloads = list(rendered.workloads())
    assert {w["metadata"]["name"] for w in workloads} == {
        *(f"{FULLNAME}-{service}" for service in SERVICES),
        f"{FULLNAME}-redis",
        f"{FULLNAME}-redis-idempotency",
    }
    for workload in workloads:
        for container in containers(workload):
            assert "readinessProbe" in container, workload["metadata"]["name"]
            assert "livenessProbe" in container, workload["metadata"]["name"]
            assert container["readinessProbe"] != container["livenessProbe"]
    for service in SERVICES:
        container = containers(rendered.deployment(service))[0]
        assert probe_path(container, "readinessProbe") == "/readyz"
        assert probe_path(container, "livenessProbe") == "/healthz"
        assert probe_path(container, "startupProbe") == "/healthz"
        (port,) = container["ports"]
        assert port["name"] == "http"


async def test_the_services_serve_the_probed_paths() -> None:
    # The writer, replicator and recovery: regionstore_shared.runtime's health listener.
    for ready, readyz in ((True, 200), (False, 503)):
        app = _health_app(ServiceState(ready=ready))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == readyz
    # The gateway: its operations router.
    paths = {getattr(route, "path", None) for route in gateway_health.routes}
    assert {"/healthz", "/readyz"} <= paths


def selects(policy: Manifest, labels: dict[str, str]) -> bool:
    return labels_match(policy["spec"]["podSelector"], labels)


def from_outside(rule: dict[str, Any]) -> bool:
    """Whether an ingress rule admits anything outside the namespace."""
    peers = rule.get("from")
    if not peers:
        return True
    return any("namespaceSelector" in peer or "ipBlock" in peer for peer in peers)


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_only_the_gateway_is_reachable_from_outside(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    # Everything in the namespace is refused what no policy allows.
    assert any(
        p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
        for p in policies
    )
    exposed = {
        policy["metadata"]["name"]
        for policy in policies
        for rule in policy["spec"].get("ingress", [])
        if from_outside(rule)
    }
    assert exposed == {f"{FULLNAME}-gateway"}
    gateway = pod_labels(rendered.deployment("gateway"))
    for workload in rendered.workloads():
        labels = pod_labels(workload)
        admitting = [p for p in policies if selects(p, labels) and p["spec"].get("ingress")]
        if labels == gateway:
            assert [p["metadata"]["name"] for p in admitting] == [f"{FULLNAME}-gateway"]
        else:
            assert all(not from_outside(r) for p in admitting for r in p["spec"]["ingress"])
    # Only the gateway has a Service a client outside could use.
    for service in rendered.of_kind("Service"):
        if service["metadata"]["name"] != f"{FULLNAME}-gateway":
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not rendered.of_kind("Ingress")
    # Kafka: one internal listener, open to this release's pods and to KEDA's operator alone.
    (kafka,) = rendered.of_kind("Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["type"] == "internal"
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert listener["networkPolicyPeers"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "regionstore",
                    "app.kubernetes.io/instance": RELEASE,
                }
            }
        },
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        },
    ]
    for store in rendered.of_kind("MongoDBCommunity"):
        assert "replicaSetHorizons" not in store["spec"]


def test_an_ingress_routes_to_the_gateway_alone(tmp_path: Path) -> None:
    ingress_values = values(gateway={"ingress": {"enabled": True, "host": "api.example"}})
    (ingress,) = render(ingress_values, tmp_path).of_kind("Ingress")
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {f"{FULLNAME}-gateway"}


def test_the_topics_are_the_services_own(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(rendered, "writer", monkeypatch)
    topics = {t["spec"]["topicName"]: t["spec"] for t in rendered.of_kind("KafkaTopic")}
    assert set(topics) == set(all_topics(settings))
    for name, spec in topics.items():
        assert spec["partitions"] == _partitions(settings, name)
        assert spec["replicas"] == settings.kafka.replication_factor
        assert {k: str(v) for k, v in spec["config"].items()} == _topic_config(settings, name)
    # The services' user may use each of them.
    user = rendered.one("KafkaUser", "regionstore")
    allowed = {
        acl["resource"]["name"]
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic" and "Write" in acl["operations"]
    }
    assert allowed == set(topics)


def test_recovery_may_delete_what_it_drained_from_the_pending_topics_alone(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(rendered, "recovery", monkeypatch)
    user = rendered.one("KafkaUser", "regionstore")
    deletable = [
        acl["resource"]
        for acl in user["spec"]["authorization"]["acls"]
        if "Delete" in acl["operations"]
    ]
    assert deletable == [
        {
            "type": "topic",
            "name": settings.kafka.pending_topic_prefix,
            "patternType": "prefix",
        }
    ]


def test_consumers_scale_on_their_lag_up_to_the_partition_count(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(rendered, "writer", monkeypatch)
    groups = {
        "writer": settings.kafka.writer_group,
        "replicator": settings.kafka.replicator_group,
    }
    for service, group in groups.items():
        assert "replicas" not in rendered.deployment(service)["spec"]
        scaled = rendered.one("ScaledObject", f"{FULLNAME}-{service}")
        assert scaled["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-{service}"
        assert scaled["spec"]["minReplicaCount"] == 2
        assert scaled["spec"]["maxReplicaCount"] == settings.kafka.partitions
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == settings.kafka.command_topic
        assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers


def test_a_lower_consumer_cap_is_kept(tmp_path: Path) -> None:
    capped = render(values(writer={"autoscaling": {"maxReplicas": 3}}), tmp_path)
    assert capped.one("ScaledObject", f"{FULLNAME}-writer")["spec"]["maxReplicaCount"] == 3
    assert capped.one("ScaledObject", f"{FULLNAME}-replicator")["spec"]["maxReplicaCount"] == 6


def test_every_workload_has_a_disruption_budget(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for workload in rendered.workloads():
        labels = pod_labels(workload)
        assert any(labels_match(b["spec"]["selector"], labels) for b in budgets), workload[
            "metadata"
        ]["name"]


def test_plain_kafka_is_sasl_plaintext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = render(values(kafka={"tls": False}), tmp_path)
    settings = settings_of(plain, "gateway", monkeypatch)
    assert settings.kafka.security_protocol == "SASL_PLAINTEXT"
    assert settings.kafka.bootstrap_servers == f"{FULLNAME}-kafka-bootstrap.{NAMESPACE}.svc:9092"
    assert "SSL_CERT_FILE" not in plain.config
    assert f"{FULLNAME}-cluster-ca-cert" not in plain.text


def test_more_settings_reach_every_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = render(values(settings={"REGIONSTORE_API__MAX_BATCH_ITEMS": 500}), tmp_path)
    assert tuned.config["REGIONSTORE_API__MAX_BATCH_ITEMS"] == "500"
    settings = settings_of(tuned, "gateway", monkeypatch)
    assert isinstance(settings, GatewaySettings)
    assert settings.api.max_batch_items == 500


def test_consumers_keep_their_placement_tables_on_a_volume_of_their_own(
    rendered: Rendered,
) -> None:
    for service in ("writer", "replicator"):
        pod = rendered.deployment(service)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["REGIONSTORE_STATE_DIR"] == mounts["state"]
        (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
        assert state["emptyDir"]["sizeLimit"]
    for service in ("gateway", "recovery"):
        (container,) = containers(rendered.deployment(service))
        assert "state" not in {m["name"] for m in container["volumeMounts"]}
