"""Roles and the principal a request runs as: the key id and the role of its API key."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What a key may do; each role may do everything the ones before it may."""

    READER = "reader"
    WRITER = "writer"
    OPERATOR = "operator"

    def allows(self, required: Role) -> bool:
        """Whether a key of this role may call a route that requires ``required``."""
        return _RANK[self] >= _RANK[required]


_RANK = {Role.READER: 0, Role.WRITER: 1, Role.OPERATOR: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the public id of their key, its role, and the name it was given."""

    key_id: str
    role: Role
    # Only a label for people (the audit trail, the console): not part of who is calling.
    name: str = field(default="", compare=False)
