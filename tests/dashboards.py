"""The Grafana dashboard and the alert rules as tests see them: the panels, the PromQL, and the
metric names they use.

``metric_names`` reads the metric names out of a PromQL expression without a PromQL parser:
string literals, label matchers, ranges, grouping clauses and Grafana's ``$variables`` are
removed, and what is left is a metric name unless it is a keyword or is called like a function
(``rate(``, ``sum (``, ``histogram_quantile(``). ``exported_names`` lists the names a
Prometheus exposition declares, the suffixed sample names included (``_total``, ``_bucket``...),
whether or not a series has been observed yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DASHBOARD_FILE = DASHBOARDS / "regionstore.json"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "regionstore.yaml"
PROMETHEUS_FILE = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS_FILE = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"

# Series Prometheus itself adds to every target it scrapes; no service exports them.
SCRAPE_SERIES = frozenset({"up"})

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# Not after a digit or a dot, so the unit of a duration or the exponent of a number is no name.
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][\w:]*")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "inf",
        "nan",
    }
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}

Panel = dict[str, Any]


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    """The dashboard JSON."""
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[Panel]:
    """Every panel, those folded into collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of every panel's targets and of the templating variables."""
    found = [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            found.append(query)
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRINGS.sub(" ", expression)
    text = _VARIABLES.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        called = text[match.end() :].lstrip().startswith("(")
        if not called and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """Every metric name the dashboard's queries select."""
    return {name for expression in expressions(dashboard) for name in metric_names(expression)}


def alert_rules(*files: Path) -> list[dict[str, Any]]:
    """Every alerting rule of ``files``: by default deploy/prometheus/alerts.yml and every
    file in deploy/prometheus/rules/."""
    paths = files or (ALERTS_FILE, *sorted(RULES_DIR.glob("*.yml")))
    return [
        rule
        for path in paths
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_metric_names() -> set[str]:
    """Every metric name the alerting rules select."""
    return {name for rule in alert_rules() for name in metric_names(rule["expr"])}


def exported_names(exposition: str) -> set[str]:
    """Every metric name a Prometheus text exposition declares or has samples of."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def unexported(used: Iterable[str], exported: set[str]) -> set[str]:
    """The names a dashboard uses that no exposition declares (scrape series aside)."""
    return set(used) - exported - SCRAPE_SERIES
