"""The Docker path's tools fail in one line that says what is missing and what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stack import REPO_ROOT

BUILD_IMAGES = REPO_ROOT / "deploy" / "docker" / "build-images.sh"
# What the script runs before it looks for Docker.
TOOLS = ("bash", "dirname", "cat")


def run_without_docker(tmp_path: Path, fake_docker: str | None) -> subprocess.CompletedProcess[str]:
    """build-images.sh with a PATH of the basic tools, and a fake `docker` when given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, bin_dir / tool)
    if fake_docker is not None:
        docker = bin_dir / "docker"
        docker.write_text(f"#!{shutil.which('bash')}\n{fake_docker}\n")
        docker.chmod(0o755)
    return subprocess.run(
        [str(shutil.which("bash")), str(BUILD_IMAGES), str(REPO_ROOT), str(tmp_path / "cache")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("fake_docker", "expected"),
    [
        pytest.param(None, "no docker CLI here: make compose-engine", id="no-cli"),
        pytest.param("exit 1", "no Docker engine answers: make compose-engine", id="no-engine"),
    ],
)
def test_building_without_docker_says_what_to_do_in_one_line(
    tmp_path: Path, fake_docker: str | None, expected: str
) -> None:
    result = run_without_docker(tmp_path, fake_docker)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"docker images: {expected}"), result.stderr
    assert not (tmp_path / "cache").exists()
