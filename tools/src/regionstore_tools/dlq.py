"""Dead letters, read back for a person, and redriven.

``customers.deadletter`` keeps every record forever (see :mod:`regionstore_shared.topics`).
A record is one of two kinds, told apart by its headers
(:class:`regionstore_shared.pipeline.DeadLetters`):

- *refused*: a command a region refused for good; the headers name the region, the command id
  and the store's error, and the value is the command's original bytes;
- *undecodable*: a message that is no command at all; the headers say where it was read and
  why it did not decode.

A dead letter's id is its place in the topic, ``PARTITION:OFFSET``: it never changes, and one
command refused by two regions is two dead letters.

A redrive publishes the original command again to the command topic, marked ``republished``,
so the consumers route it anew and the version guard decides: a command older than what a
region holds changes nothing there. Then it records the redrive in the compacted redrive topic,
keyed by the dead letter's id, without any of the customer's fields. The command goes first:
a redrive stopped between the two publishes the command once more next time, which the
version guard makes harmless, where the other order could mark a dead letter redriven that
never was.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from regionstore_shared.pipeline import (
    COMMAND_ID_HEADER,
    ERROR_HEADER,
    REGION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from regionstore_shared.schemas import Command, decode_command
from regionstore_tools.gateway import ToolError

Kind = Literal["refused", "undecodable"]
REDRIVEN_FROM_HEADER = "regionstore-redriven-from"


class Redrive(BaseModel):
    """One redrive of a dead letter, as the redrive topic records it: ids only, no customer
    fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    dead_letter: str = Field(description="The dead letter's id, PARTITION:OFFSET.")
    command_id: str
    at: datetime = Field(description="When the command was published again (UTC).")
    by: str = Field(description="Who redrove it: the operating system's user@host.")
    published_as: str = Field(
        description="Where the command was published again: PARTITION:OFFSET of the command topic."
    )

    def encode(self) -> bytes:
        """The record's value."""
        return self.model_dump_json().encode()


def decode_redrive(raw: bytes | None) -> Redrive | None:
    """A redrive record's value; None for one this release cannot read."""
    if raw is None:
        return None
    try:
        return Redrive.model_validate_json(raw)
    except ValidationError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, as it was produced."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def id(self) -> str:
        """``PARTITION:OFFSET``."""
        return f"{self.partition}:{self.offset}"

    @property
    def at(self) -> datetime:
        """When it was dead-lettered."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def header(self, name: str) -> str | None:
        """A header's value as text; None when absent."""
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def kind(self) -> Kind:
        """Refused by a region (its headers name it), or not a command at all."""
        return "refused" if self.header(REGION_HEADER) is not None else "undecodable"

    @property
    def region(self) -> str | None:
        """The region that refused the command."""
        return self.header(REGION_HEADER)

    @property
    def error(self) -> str:
        """Why it was dead-lettered."""
        return self.header(ERROR_HEADER) or ""

    @property
    def source_topic(self) -> str | None:
        """The topic it was read from."""
        return self.header(SOURCE_TOPIC_HEADER)

    @property
    def command(self) -> Command | None:
        """The command it holds; None when its bytes do not decode to one."""
        if self.value is None:
            return None
        try:
            return decode_command(self.value)
        except ValidationError:
            return None

    @property
    def command_id(self) -> str | None:
        """The command's id, from the headers or else the command itself."""
        if (named := self.header(COMMAND_ID_HEADER)) is not None:
            return named
        command = self.command
        return None if command is None else str(command.command_id)

    @property
    def customer_id(self) -> str | None:
        """The customer it is about: the record's key."""
        return None if self.key is None else self.key.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Entry:
    """A dead letter and its latest redrive, if any."""

    letter: DeadLetter
    redrive: Redrive | None = None


@runtime_checkable
class DeadLetterLog(Protocol):
    """Where dead letters and redrives are read and written (Kafka, or a test's fake)."""

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, in topic order."""
        ...

    async def redrives(self) -> dict[str, Redrive]:
        """The latest redrive of each dead letter redriven, by dead letter id."""
        ...

    async def publish(self, command: Command, letter: DeadLetter) -> str:
        """Publish ``command`` to the command topic; where it landed (PARTITION:OFFSET)."""
        ...

    async def record(self, redrive: Redrive) -> None:
        """Record a redrive in the redrive topic."""
        ...


async def entries(log: DeadLetterLog) -> list[Entry]:
    """Every dead letter with its redrive."""
    letters, redrives = await asyncio.gather(log.dead_letters(), log.redrives())
    return [Entry(letter, redrives.get(letter.id)) for letter in letters]


def find(found: Iterable[Entry], ident: str) -> Entry:
    """The entry of dead letter ``ident``; a ToolError when there is none."""
    partition, colon, offset = ident.partition(":")
    if not (colon and partition.isdigit() and offset.isdigit()):
        raise ToolError(
            f"{ident!r} is not a dead letter id: ids are PARTITION:OFFSET, as "
            "`regionstore dlq list` shows them"
        )
    for entry in found:
        if (entry.letter.partition, entry.letter.offset) == (int(partition), int(offset)):
            return entry
    raise ToolError(f"no dead letter {ident}; `regionstore dlq list` shows them all")


@dataclass
class Outcome:
    """What a redrive did: the redrives recorded and the dead letters left, with why."""

    redriven: list[Redrive] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def operator() -> str:
    """``user@host`` of whoever runs the command line."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def not_redrivable(letter: DeadLetter) -> str:
    """Why an undecodable message cannot be redriven."""
    return (
        f"{letter.id} is not a command (it did not decode: {first_line(letter.error)}), so "
        f"there is nothing to publish again; `regionstore dlq show {letter.id}` shows it"
    )


async def redrive(log: DeadLetterLog, entry: Entry, *, by: str, again: bool = False) -> Redrive:
    """Publish one dead letter's command again, then record that it was.

    Refused (a ToolError) for a message that is no command, and for a dead letter redriven
    already unless ``again``.
    """
    letter = entry.letter
    command = letter.command
    if command is None:
        raise ToolError(not_redrivable(letter))
    if entry.redrive is not None and not again:
        raise ToolError(
            f"{letter.id} was redriven at {entry.redrive.at:%Y-%m-%d %H:%M:%S} UTC by "
            f"{entry.redrive.by}; add --again to publish its command once more"
        )
    return await _record(log, letter, command, by, await log.publish(command, letter))


async def redrive_all(log: DeadLetterLog, found: Sequence[Entry], *, by: str) -> Outcome:
    """Redrive every dead letter not redriven yet that holds a command.

    A command refused by several regions is several dead letters and is published once.
    """
    outcome = Outcome()
    published: dict[str, str] = {}
    for entry in found:
        letter = entry.letter
        command = letter.command
        if entry.redrive is not None:
            continue
        if command is None:
            outcome.skipped.append((letter.id, "not a command: it did not decode"))
            continue
        command_id = str(command.command_id)
        if command_id not in published:
            published[command_id] = await log.publish(command, letter)
        outcome.redriven.append(await _record(log, letter, command, by, published[command_id]))
    return outcome


async def _record(
    log: DeadLetterLog, letter: DeadLetter, command: Command, by: str, published_as: str
) -> Redrive:
    done = Redrive(
        dead_letter=letter.id,
        command_id=str(command.command_id),
        at=datetime.now(UTC),
        by=by,
        published_as=published_as,
    )
    await log.record(done)
    return done


def first_line(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut to ``limit`` characters; "-" when there is none."""
    line = text.strip().splitlines()[0] if text.strip() else "-"
    return line if len(line) <= limit else f"{line[: limit - 1]}…"
