"""deploy/docker/digest.sh: the digest build-images.sh labels each image with, and compares to
build it again only when an input changed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.stack import REPO_ROOT

DIGEST = REPO_ROOT / "deploy" / "docker" / "digest.sh"
# The service image's context as build-images.sh names it: the members, their tests aside.
PATHSPEC = ("app", ":(exclude)*/tests/*")

Digest = Callable[..., str]


def run(*arguments: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in arguments], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def work_tree(tmp_path: Path) -> Path:
    """A git work tree with a member's source, its tests, and an ignored virtualenv."""
    tree = tmp_path / "repo"
    (tree / "app" / "tests").mkdir(parents=True)
    (tree / "app" / ".venv").mkdir()
    (tree / ".gitignore").write_text(".venv/\n")
    (tree / "app" / "main.py").write_text("print('one')\n")
    (tree / "app" / "tests" / "test_main.py").write_text("def test(): pass\n")
    (tree / "app" / ".venv" / "site.py").write_text("installed\n")
    run("git", "init", "-q", cwd=tree)
    run("git", "add", ".", cwd=tree)
    return tree


@pytest.fixture
def digest(work_tree: Path) -> Digest:
    def of(*also: str) -> str:
        options = [x for text in also for x in ("--also", text)]
        value = run("bash", DIGEST, *options, "--git", work_tree, *PATHSPEC)
        assert re.fullmatch("[0-9a-f]{64}", value), value
        return value

    return of


def test_the_same_inputs_give_the_same_digest(digest: Digest) -> None:
    assert digest() == digest()


def test_a_changed_source_changes_it(digest: Digest, work_tree: Path) -> None:
    before = digest()

    (work_tree / "app" / "main.py").write_text("print('two')\n")

    assert digest() != before


def test_a_new_untracked_source_changes_it(digest: Digest, work_tree: Path) -> None:
    before = digest()

    (work_tree / "app" / "extra.py").write_text("x = 1\n")

    assert digest() != before


def test_a_lost_execute_bit_changes_it(digest: Digest, work_tree: Path) -> None:
    (work_tree / "app" / "main.py").chmod(0o755)
    before = digest()

    (work_tree / "app" / "main.py").chmod(0o644)

    assert digest() != before


def test_a_build_argument_or_base_image_changes_it(digest: Digest) -> None:
    assert digest("base sha256:1") != digest("base sha256:2") != digest()


def test_ignored_and_excluded_files_do_not(digest: Digest, work_tree: Path) -> None:
    before = digest()

    (work_tree / "app" / ".venv" / "site.py").write_text("reinstalled\n")
    (work_tree / "app" / "tests" / "test_main.py").write_text("def test(): assert 1\n")

    assert digest() == before


def test_a_plain_directory_is_digested_whole(tmp_path: Path) -> None:
    context = tmp_path / "context"
    (context / "bin").mkdir(parents=True)
    (context / "bin" / "start.sh").write_text("exec server\n")
    before = run("bash", DIGEST, context)

    (context / "bin" / "start.sh").write_text("exec server --verbose\n")

    assert run("bash", DIGEST, context) != before
