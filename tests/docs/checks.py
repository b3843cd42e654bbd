"""What the README and docs/ name, checked against what exists: links, make targets, CLI commands.

Only text a reader would follow is checked: links outside code, and `make ...` and
`regionstore ...` inside code spans and code blocks (where commands are written).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import typer

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# `make [VAR=value ...] target`: variables may come before the target.
MAKE = re.compile(r"(?<![\w$(/.-])make\s+(?:[A-Z][A-Z0-9_]*=\S*\s+)*(?P<target>[a-z][a-z0-9_-]*)")
# `regionstore command [subcommand]` where a command starts: at the start of the code, after
# `uv run`, `$` or a shell operator; not `kubectl -n regionstore create ...` nor a path.
CLI = re.compile(
    r"(?:^|(?:uv run|[;&|($]))\s*regionstore[ \t]+(?P<command>[a-z][a-z-]*)"
    r"(?:[ \t]+(?P<sub>[a-z][a-z|-]*))?"
)
MAKE_RULE = re.compile(r"^(?P<names>[A-Za-z0-9_.-][A-Za-z0-9_. -]*):(?!=)")


@dataclass(frozen=True)
class Problem:
    """One thing a document names that does not exist."""

    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass(frozen=True)
class Line:
    number: int
    prose: str  # the line with its code spans blanked out; empty inside a code block
    code: tuple[str, ...]  # its code spans, or the whole line inside a code block


def lines(text: str) -> Iterator[Line]:
    """Each line of a Markdown text, its prose apart from its code."""
    in_block = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if FENCE.match(raw):
            in_block = not in_block
            continue
        if in_block:
            yield Line(number, "", (raw,))
            continue
        spans = tuple(match.group(2) for match in CODE_SPAN.finditer(raw))
        yield Line(number, CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), raw), spans)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = LINK.sub(lambda m: m.group("text"), heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in lines(text):
        match = HEADING.match(line.prose) if line.prose else None
        if match is None:
            continue
        base = slug(_heading_text(text, line.number))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _heading_text(text: str, number: int) -> str:
    raw = text.splitlines()[number - 1]
    match = HEADING.match(raw)
    assert match is not None
    return match.group(2)


def broken_links(root: Path, files: Iterable[Path]) -> list[Problem]:
    """Relative links whose file, or whose anchor in that file, does not exist."""
    problems: list[Problem] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(root))
        for line in lines(text):
            for match in LINK.finditer(line.prose):
                target = match.group("target")
                if EXTERNAL.match(target):
                    continue
                problem = _resolve(root, path, text, unquote(target))
                if problem:
                    problems.append(Problem(where, line.number, f"{target}: {problem}"))
    return problems


def _resolve(root: Path, source: Path, text: str, target: str) -> str | None:
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    if not destination.is_relative_to(root.resolve()):
        return "outside the repository"
    if not destination.exists():
        return "no such file"
    if not anchor:
        return None
    if destination.suffix != ".md":
        return "an anchor into a file that is not Markdown"
    target_text = text if destination == source else destination.read_text(encoding="utf-8")
    return None if anchor in anchors(target_text) else f"no heading #{anchor}"


def make_targets(makefile: Path) -> set[str]:
    """Every target the Makefile declares: its .PHONY names and its rules."""
    targets: set[str] = set()
    for raw in makefile.read_text(encoding="utf-8").splitlines():
        match = MAKE_RULE.match(raw)
        if match is None:
            continue
        names, _, rest = raw.partition(":")
        targets.update(rest.split() if names == ".PHONY" else names.split())
    return targets


def unknown_make_targets(root: Path, files: Iterable[Path], targets: set[str]) -> list[Problem]:
    """`make <target>` in code whose target the Makefile does not have."""
    return [
        Problem(where, number, f"make {match.group('target')}: no such target")
        for where, number, code in _code(root, files)
        for match in MAKE.finditer(code)
        if match.group("target") not in targets
    ]


def cli_commands(app: typer.Typer) -> dict[str, set[str]]:
    """The CLI's commands, each with its subcommands (empty for a plain command)."""
    return _subcommands(typer.main.get_command(app))


def _subcommands(command: object) -> dict[str, set[str]]:
    # Typer ships its own copy of click: a group is a TyperGroup, not a click.Group.
    if not isinstance(command, typer.core.TyperGroup):
        return {}
    context = typer.Context(command)
    found: dict[str, set[str]] = {}
    for name in command.list_commands(context):
        found[name] = set(_subcommands(command.get_command(context, name)))
    return found


def unknown_cli_commands(
    root: Path, files: Iterable[Path], commands: dict[str, set[str]]
) -> list[Problem]:
    """`regionstore <command> [<subcommand>]` in code that the CLI does not have."""
    problems: list[Problem] = []
    for where, number, code in _code(root, files):
        for match in CLI.finditer(code):
            command, sub = match.group("command"), match.group("sub")
            if command not in commands:
                problems.append(Problem(where, number, f"regionstore {command}: no such command"))
                continue
            subcommands = commands[command]
            if not subcommands or sub is None:
                continue
            problems.extend(
                Problem(where, number, f"regionstore {command} {name}: no such subcommand")
                for name in sub.split("|")
                if name and name not in subcommands
            )
    return problems


def _code(root: Path, files: Iterable[Path]) -> Iterator[tuple[str, int, str]]:
    for path in files:
        where = str(path.relative_to(root))
        for line in lines(path.read_text(encoding="utf-8")):
            for code in line.code:
                yield where, line.number, code


@dataclass(frozen=True)
class CurlRequest:
    """One `curl` command of a code block: what it asks the gateway (`$GW`) for."""

    line: int
    method: str
    path: str
    body: str | None


CURL_METHOD = re.compile(r"\s-X\s+(?P<method>[A-Z]+)")
CURL_PATH = re.compile(r"\"\$GW(?P<path>/[^\"?]*)")
CURL_BODY = re.compile(r"\s-d\s+'(?P<body>[^']*)'")


def curl_requests(text: str) -> list[CurlRequest]:
    """The `curl ... "$GW/..."` commands of the code blocks, continued lines joined."""
    requests: list[CurlRequest] = []
    command, start = "", 0
    for line in lines(text):
        if line.prose or not line.code:
            continue
        code = line.code[0]
        if not command:
            start = line.number
        command += " " + code.rstrip().removesuffix("\\")
        if code.rstrip().endswith("\\") or command.count("'") % 2:
            continue
        path = CURL_PATH.search(command)
        if command.strip().startswith("curl") and path:
            method = CURL_METHOD.search(command)
            body = CURL_BODY.search(command)
            requests.append(
                CurlRequest(
                    start,
                    method.group("method") if method else "POST" if body else "GET",
                    path.group("path"),
                    body.group("body") if body else None,
                )
            )
        command = ""
    return requests


def route_of(paths: Iterable[str], path: str) -> str | None:
    """The OpenAPI path template that `path` matches, if any."""
    for template in paths:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return None
