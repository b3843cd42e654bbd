"""One version and one licence for the whole workspace, and a CHANGELOG entry for the version."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RELEASE = re.compile(r"^## (\d+\.\d+\.\d+)\b", re.MULTILINE)


def pyproject(directory: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return project


def members() -> list[Path]:
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    return [ROOT / member for member in workspace["members"]]


def test_every_member_carries_the_projects_version() -> None:
    project_version = pyproject(ROOT)["version"]
    versions = {member.name: pyproject(member)["version"] for member in members()}
    assert set(versions.values()) == {project_version}, versions


def test_the_installed_packages_are_that_version() -> None:
    # The gateway's OpenAPI version is read from here (test_gateway_version.py).
    project_version = pyproject(ROOT)["version"]
    assert {version(pyproject(member)["name"]) for member in members()} == {project_version}


def test_the_changelog_starts_with_that_version() -> None:
    releases = RELEASE.findall((ROOT / "CHANGELOG.md").read_text())
    assert releases, "CHANGELOG.md has no '## x.y.z' release heading"
    assert releases[0] == pyproject(ROOT)["version"]


def test_one_licence_with_its_text() -> None:
    licences = {pyproject(directory).get("license") for directory in [ROOT, *members()]}
    assert licences == {"Apache-2.0"}
    text = " ".join((ROOT / "LICENSE").read_text().split())
    assert text.startswith("Apache License Version 2.0, January 2004")
