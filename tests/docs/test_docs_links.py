"""The README and docs/ against the repository: links, make targets and CLI commands exist.

No stack: the files, the Makefile and the CLI's Typer app, introspected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from regionstore_tools.cli import app
from tests.docs.checks import (
    anchors,
    broken_links,
    cli_commands,
    make_targets,
    slug,
    unknown_cli_commands,
    unknown_make_targets,
)

ROOT = Path(__file__).resolve().parents[2]


def documents(root: Path) -> list[Path]:
    return [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def commands() -> dict[str, set[str]]:
    return cli_commands(app)


class TestTheRepository:
    def test_every_relative_link_and_anchor_resolves(self) -> None:
        problems = broken_links(ROOT, documents(ROOT))
        assert not problems, "\n".join(map(str, problems))

    def test_every_make_target_named_exists(self) -> None:
        problems = unknown_make_targets(ROOT, documents(ROOT), make_targets(ROOT / "Makefile"))
        assert not problems, "\n".join(map(str, problems))

    def test_every_cli_command_named_exists(self, commands: dict[str, set[str]]) -> None:
        problems = unknown_cli_commands(ROOT, documents(ROOT), commands)
        assert not problems, "\n".join(map(str, problems))

    def test_the_cli_is_introspected_not_listed(self, commands: dict[str, set[str]]) -> None:
        # A few commands the README's table names, with the groups' subcommands.
        assert {"status", "list", "import", "audit-log"} <= commands.keys()
        assert commands["region"] == {"down", "up"}
        assert {"create", "list", "revoke"} <= commands["keys"]


def write(root: Path, files: dict[str, str]) -> list[Path]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return [root / name for name in files if name.endswith(".md")]


class TestTheChecksFail:
    """Each check finds what is broken, and only that."""

    def test_a_missing_file_and_a_missing_anchor(self, tmp_path: Path) -> None:
        files = write(
            tmp_path,
            {
                "README.md": "# Top\n\n[ok](docs/a.md#the-part) [gone](docs/b.md) "
                "[no part](docs/a.md#nowhere) [here](#top) [web](https://example.com/x)\n",
                "docs/a.md": "# A\n\n## The part\n\n[back](../README.md#top) [bad](#a-2)\n",
            },
        )
        problems = [str(problem) for problem in broken_links(tmp_path, files)]
        assert problems == [
            "README.md:3: docs/b.md: no such file",
            "README.md:3: docs/a.md#nowhere: no heading #nowhere",
            "docs/a.md:5: #a-2: no heading #a-2",
        ]

    def test_links_in_code_are_not_followed(self, tmp_path: Path) -> None:
        files = write(tmp_path, {"README.md": "`[x](nowhere.md)`\n\n```\n[y](gone.md)\n```\n"})
        assert broken_links(tmp_path, files) == []

    def test_an_unknown_make_target(self, tmp_path: Path) -> None:
        files = write(
            tmp_path,
            {
                "Makefile": ".PHONY: up\nup: tools ## start\n\t@true\n\nX := 1\n",
                "README.md": "Run `make up SCALE=2`, then `make upp`; make sure of it.\n\n"
                "```sh\nmake X=1 down   # stop\n```\n",
            },
        )
        targets = make_targets(tmp_path / "Makefile")
        assert targets == {"up"}
        problems = [str(problem) for problem in unknown_make_targets(tmp_path, files, targets)]
        assert problems == [
            "README.md:1: make upp: no such target",
            "README.md:4: make down: no such target",
        ]

    def test_an_unknown_cli_command_or_subcommand(self, tmp_path: Path) -> None:
        files = write(
            tmp_path,
            {
                "README.md": "`regionstore status`, `regionstore keys create|lost`, "
                "`regionstore stauts`, `python -m regionstore_gateway.keys list`, "
                "`deploy/helm/regionstore`, `regionstore seed N`\n",
            },
        )
        commands = {"status": set(), "seed": set(), "keys": {"create", "list"}}
        problems = [str(p) for p in unknown_cli_commands(tmp_path, files, commands)]
        assert problems == [
            "README.md:1: regionstore keys lost: no such subcommand",
            "README.md:1: regionstore stauts: no such command",
        ]


class TestAnchors:
    def test_github_slugs(self) -> None:
        assert slug("Idempotency records: their budget") == "idempotency-records-their-budget"
        assert slug("### `regionstore dlq`".lstrip("# ")) == "regionstore-dlq"
        assert slug("Quick start: [the stack](x.md)") == "quick-start-the-stack"

    def test_repeated_headings_are_numbered(self) -> None:
        assert anchors("# A\n## Proof\n## Proof\n```\n# not a heading\n```\n") == {
            "a",
            "proof",
            "proof-1",
        }
