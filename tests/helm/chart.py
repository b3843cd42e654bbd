"""Rendering deploy/helm/regionstore with the real helm, and reading what it rendered.

The tools are the ones tests/helm/install-tools.sh builds into CACHE_DIR/helm (`make test-tools`);
a missing one fails the test that needs it, since a validator that is not there validates nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "regionstore"
HERE = Path(__file__).resolve().parent
RELEASE = "rs"
NAMESPACE = "regionstore"
FULLNAME = f"{RELEASE}-regionstore"
INSTALL_HINT = "run `make test-tools` (tests/helm/install-tools.sh builds it from its Go module)"

Manifest = dict[str, Any]
Values = dict[str, Any]

# The Secrets' names only: the chart never sees a secret's value.
SECRET_NAMES = {
    "kafka": "regionstore-kafka",
    "redis": "regionstore-redis",
    "idempotencyRedis": "regionstore-idempotency-redis",
    "store": "regionstore-store",
    "auth": "regionstore-auth",
}
SERVICES = ("gateway", "writer", "replicator", "recovery")


def tool_versions() -> dict[str, str]:
    """tests/helm/tools.env: NAME=VALUE lines."""
    versions = {}
    for line in (HERE / "tools.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            versions[name.strip()] = value.strip()
    return versions


def helm_dir() -> Path:
    """Where install-tools.sh puts the tools and schemas: CACHE_DIR/helm (the Makefile's)."""
    return Path(os.environ.get("CACHE_DIR") or REPO_ROOT / ".cache") / "helm"


def tool(name: str) -> Path:
    """The path of a built tool, or the test fails saying how to build it."""
    version = tool_versions()[f"{name.upper().replace('-', '_')}_VERSION"]
    path = helm_dir() / "bin" / f"{name}-{version}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} {version} is not built at {path}: {INSTALL_HINT}", pytrace=False)
    return path


def schema_dir() -> Path:
    path = helm_dir() / "schemas"
    if not (path / ".stamp").is_file():
        pytest.fail(f"no kubeconform schemas at {path}: {INSTALL_HINT}", pytrace=False)
    return path


def run(args: list[str | Path], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # Helm keeps no state we want: its cache, config and data go to a throwaway place.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(helm_dir() / "home"),
        "HELM_CACHE_HOME": str(helm_dir() / "home" / "cache"),
        "HELM_CONFIG_HOME": str(helm_dir() / "home" / "config"),
        "HELM_DATA_HOME": str(helm_dir() / "home" / "data"),
    }
    return subprocess.run(
        [str(arg) for arg in args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def region_map(count: int) -> list[Values]:
    """``count`` regions splitting zip prefixes 1000-99999, each replicated to the next one."""
    span = (99999 - 1000 + 1) // count
    regions = []
    for index in range(count):
        low = 1000 + index * span
        high = 99999 if index == count - 1 else low + span - 1
        replica = f"region_{(index + 1) % count + 1}"
        regions.append(
            {"name": f"region_{index + 1}", "zip_min": low, "zip_max": high, "replicas": [replica]}
        )
    return regions


def values(region_count: int = 3, /, **overrides: Any) -> Values:
    """Values with every required one given, and ``overrides`` merged in (dicts deeply)."""
    base: Values = {
        "regions": region_map(region_count),
        "secrets": {name: {"name": secret} for name, secret in SECRET_NAMES.items()},
    }
    return merge(base, overrides)


def merge(base: Values, extra: Mapping[str, Any]) -> Values:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def template(chart_values: Values, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with these values."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(chart_values))
    return run(
        [tool("helm"), "template", RELEASE, CHART, "--namespace", NAMESPACE, "-f", values_file]
    )


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass
class Rendered:
    """The manifests of one render, and ways to look into them."""

    text: str
    manifests: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [doc for doc in self.manifests if doc["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> Iterator[Manifest]:
        for doc in self.manifests:
            if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
                yield doc

    @cached_property
    def config(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", f"{FULLNAME}-config")["data"]
        return data

    def deployment(self, service: str) -> Manifest:
        return self.one("Deployment", f"{FULLNAME}-{service}")


def render(chart_values: Values, tmp_path: Path) -> Rendered:
    result = template(chart_values, tmp_path)
    assert result.returncode == 0, result.stderr
    return Rendered(result.stdout, documents(result.stdout))


def containers(workload: Manifest) -> list[Manifest]:
    found: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    return found


def labels_match(selector: Manifest, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions In/NotIn/Exists) selects."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        present = key in labels
        listed = labels.get(key) in expression.get("values", [])
        if (
            (operator == "In" and not listed)
            or (operator == "NotIn" and listed)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True
