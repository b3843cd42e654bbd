"""The chart through the real validators: `helm lint`, `kubeconform -strict` with the operators'
own CRD schemas, and kube-score's policies, for region maps of 3 and 6.

Each validator is also shown to refuse a broken manifest, so that a pass means something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import (
    CHART,
    Manifest,
    Rendered,
    containers,
    render,
    run,
    schema_dir,
    tool,
    values,
)

# Each schema location is tried in turn: the native kinds' files, then the custom resources'.
SCHEMA_LOCATIONS = (
    "{dir}/native/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
    "{dir}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
)
# The custom resources the chart writes, by the operator that serves them.
CUSTOM_KINDS = {
    "Kafka",
    "KafkaNodePool",
    "KafkaTopic",
    "KafkaUser",
    "MongoDBCommunity",
    "ScaledObject",
    "TriggerAuthentication",
}


@pytest.fixture(scope="module", params=[3, 6], ids=["3-regions", "6-regions"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render(values(request.param), tmp_path_factory.mktemp("render"))


def kubeconform(manifests: str) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, one result per resource, stderr) of `kubeconform -strict` on the text."""
    locations = [loc.format(dir=schema_dir()) for loc in SCHEMA_LOCATIONS]
    args: list[str | Path] = [tool("kubeconform"), "-strict", "-output", "json", "-verbose"]
    for location in locations:
        args += ["-schema-location", location]
    result = run([*args, "-"], stdin=manifests)
    resources: list[dict[str, Any]] = json.loads(result.stdout or "{}").get("resources", [])
    return result.returncode, resources, result.stderr


def test_helm_lint_passes_strictly(tmp_path: Path) -> None:
    for regions in (3, 6):
        values_file = tmp_path / f"values-{regions}.yaml"
        values_file.write_text(yaml.safe_dump(values(regions)))
        result = run([tool("helm"), "lint", "--strict", CHART, "-f", values_file])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_kubeconform_validates_every_resource_strictly(rendered: Rendered) -> None:
    code, resources, stderr = kubeconform(rendered.text)
    statuses = {(r["kind"], r["name"]): r["status"] for r in resources}
    assert code == 0, [r for r in resources if r["status"] != "statusValid"] or stderr
    assert len(resources) == len(rendered.manifests)
    # Valid, not skipped for want of a schema: every kind, the operators' ones too.
    assert set(statuses.values()) == {"statusValid"}
    assert CUSTOM_KINDS <= {kind for kind, _ in statuses}


def broken(manifest: Manifest, path: tuple[str | int, ...], field: str) -> Manifest:
    """A copy of ``manifest`` with an unknown ``field`` where ``path`` leads."""
    copy: Manifest = json.loads(json.dumps(manifest))
    node: Any = copy
    for step in path:
        node = node[step]
    node[field] = "unexpected"
    return copy


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Deployment", ("spec", "template", "spec", "containers", 0, "readinessProbe")),
        ("NetworkPolicy", ("spec",)),
        ("Kafka", ("spec", "kafka")),
        ("KafkaTopic", ("spec",)),
        ("KafkaUser", ("spec", "authorization", "acls", 0, "resource")),
        ("MongoDBCommunity", ("spec", "security")),
        ("ScaledObject", ("spec", "triggers", 0)),
        ("TriggerAuthentication", ("spec",)),
        ("ScaledObject", ("metadata",)),
    ],
)
def test_kubeconform_refuses_an_unknown_field(
    rendered: Rendered, kind: str, path: tuple[str | int, ...]
) -> None:
    manifest = broken(rendered.of_kind(kind)[0], path, "misspelt")
    code, resources, _ = kubeconform(yaml.safe_dump(manifest))
    assert code != 0
    assert resources[0]["status"] == "statusInvalid"
    assert "misspelt" in resources[0]["msg"]


def test_kubeconform_refuses_a_wrong_type(rendered: Rendered) -> None:
    scaled = json.loads(json.dumps(rendered.of_kind("ScaledObject")[0]))
    scaled["spec"]["maxReplicaCount"] = "six"
    code, resources, _ = kubeconform(yaml.safe_dump(scaled))
    assert code != 0
    assert "maxReplicaCount" in resources[0]["msg"]


def kube_score(manifests: str) -> tuple[int, str]:
    # Its default checks, and two optional ones the chart meets: a seccomp profile, named ports.
    optional = ("container-seccomp-profile", "container-ports-check")
    args: list[str | Path] = [tool("kube-score"), "score", "--output-format", "ci"]
    for test in optional:
        args += ["--enable-optional-test", test]
    result = run([*args, "-"], stdin=manifests)
    return result.returncode, result.stdout + result.stderr


def test_kube_score_finds_nothing_critical(rendered: Rendered) -> None:
    code, report = kube_score(rendered.text)
    critical = [line for line in report.splitlines() if line.startswith("[CRITICAL]")]
    assert code == 0, "\n".join(critical) or report
    assert not critical
    # It read the workloads, not an empty stream.
    checked = {line.split(": ")[0].split(" ", 1)[1] for line in report.splitlines()}
    for workload in rendered.workloads():
        assert f"{workload['metadata']['name']} apps/v1/{workload['kind']}" in checked


def test_kube_score_refuses_an_unprobed_or_privileged_workload(rendered: Rendered) -> None:
    gateway, writer = rendered.deployment("gateway"), rendered.deployment("writer")
    unprobed, privileged = json.loads(json.dumps([gateway, writer]))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        del containers(unprobed)[0][probe]
    containers(privileged)[0]["securityContext"]["privileged"] = True
    others = [doc for doc in rendered.manifests if doc is not gateway and doc is not writer]
    code, report = kube_score(yaml.safe_dump_all([*others, unprobed, privileged]))
    assert code != 0
    critical = [line for line in report.splitlines() if line.startswith("[CRITICAL]")]
    assert critical == [
        "[CRITICAL] rs-regionstore-gateway apps/v1/Deployment: "
        "Container is missing a readinessProbe",
        "[CRITICAL] rs-regionstore-writer apps/v1/Deployment: (writer) The container is privileged",
    ]
