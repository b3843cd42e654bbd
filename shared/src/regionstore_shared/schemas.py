"""Customer records and the commands that change them, as they travel through Kafka.

Commands are imperative (``UpsertCustomer``, ``DeleteCustomer``) and carry everything an apply
needs: the version that orders them and the explicit list of regions they touch, so no consumer
has to re-derive placement from configuration that might differ from the gateway's.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)

UF_CODES: tuple[str, ...] = (
    "AC", "AL", "AM", "AP", "BA", "CE", "DF", "ES", "GO", "MA", "MG", "MS", "MT", "PA",
    "PB", "PE", "PI", "PR", "RJ", "RN", "RO", "RR", "RS", "SC", "SE", "SP", "TO",
)  # fmt: skip

CustomerId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Opaque id: 1-64 letters, digits, '_' or '-' (Olist uses 32 hex chars).",
        examples=["06b8999e2fba1a1fbc88172c00ba8bc7"],
    ),
]
Version = Annotated[int, Field(ge=1, lt=2**63, description="Hybrid logical clock value.")]


def fold_text(text: str) -> str:
    """Case- and accent-insensitive key of a text: 'São Paulo' and 'sao  PAULO' fold alike."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _lowercase_hex(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _known_state(value: object) -> object:
    if not isinstance(value, str):
        return value
    code = value.strip().upper()
    if code not in UF_CODES:
        raise ValueError(f"must be one of the 27 Brazilian UF codes ({', '.join(UF_CODES)})")
    return code


def _printable(value: str) -> str:
    if value.isprintable():
        return value
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError("must not contain control characters")
    return value


UniqueId = Annotated[
    str,
    BeforeValidator(_lowercase_hex),
    Field(
        pattern=r"^[0-9a-f]{32}$",
        description="The person behind one or more customer ids: 32 hex characters.",
        examples=["861eff4711a542e4b93843c6dd7febb0"],
    ),
]
ZipPrefix = Annotated[
    int, Field(ge=0, le=99999, strict=True, description="First five digits of the zip code.")
]
City = Annotated[
    str,
    Field(min_length=1, max_length=100, examples=["franca"]),
    AfterValidator(_printable),
]
StateCode = Annotated[
    str,
    BeforeValidator(_known_state),
    Field(min_length=2, max_length=2, description="Brazilian UF code, e.g. SP."),
]


class Customer(BaseModel):
    """A customer as the Olist data set describes one."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
                    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
                    "customer_zip_code_prefix": 14409,
                    "customer_city": "franca",
                    "customer_state": "SP",
                }
            ]
        },
    )

    customer_id: CustomerId
    customer_unique_id: UniqueId
    customer_zip_code_prefix: ZipPrefix
    customer_city: City
    customer_state: StateCode


class Applier(StrEnum):
    """Which consumer applies a target: the writer or the replicator.

    The writer takes the upsert in the customer's home region; the replicator takes every other
    target it routes, the replicas' upserts and every tombstone (see
    :mod:`regionstore_shared.placement`). Commands mark a delete's first tombstone as the
    writer's, as releases before the placement tables applied it; the consumers now decide
    who writes each tombstone. The values are the wire spelling, kept from when this was called
    a role so that commands already in Kafka agree; ``"writer"`` and ``"replicator"`` are
    accepted too, so a later release may emit them.
    """

    WRITER = "home"
    REPLICATOR = "replica"

    @classmethod
    def _missing_(cls, value: object) -> Applier | None:
        return _APPLIER_ALIASES.get(value) if isinstance(value, str) else None


_APPLIER_ALIASES = {"writer": Applier.WRITER, "replicator": Applier.REPLICATOR}


class Action(StrEnum):
    """What a region does with a command."""

    UPSERT = "upsert"
    TOMBSTONE = "tombstone"


class Target(BaseModel):
    """One region a command must reach."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str
    role: Applier
    action: Action


class _CommandBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    command_id: UUID = Field(description="Unique per accepted write; follows it through logs.")
    version: Version
    issued_at_ms: int = Field(ge=0, description="Gateway wall clock when accepted (ms).")
    targets: tuple[Target, ...] = Field(min_length=1)
    republished: bool = Field(
        default=False,
        description="Published again (a retried idempotency key, a redriven dead letter, a "
        "repair): the version stands as it is, so it never overtakes a write the partition "
        "took after its first publishing.",
    )
    position: int | None = Field(
        default=None,
        ge=0,
        description="The command's offset in its partition of the command topic, set with its "
        "effective version by the consumer that routed it; None as the gateway publishes it.",
    )
    after: int | None = Field(
        default=None,
        ge=0,
        description="An offset its partition had certainly reached when the gateway made the "
        "command, before its first publishing: a republished command is lifted over a newer "
        "one appended below it (see regionstore_shared.placement). None when not known.",
    )

    @property
    def key(self) -> str:
        """Kafka key: one customer's commands share a partition and so stay in order."""
        raise NotImplementedError


class Sealed(BaseModel):
    """A customer's fields, encrypted with a key of that customer alone (see
    :mod:`regionstore_shared.personal`): destroying the key erases every copy at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: CustomerId
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="Which key of the customer.")
    nonce: str = Field(description="AES-GCM nonce, base64.")
    data: str = Field(description="The customer's JSON, AES-256-GCM encrypted, base64.")


class UpsertCustomer(_CommandBase):
    """Make ``customer`` the current state at ``version``; tombstone it where it no longer lives.

    Schema version 2 carries the customer ``sealed`` only: on the wire, and in every record
    that keeps a command, the personal fields are ciphertext. ``customer`` is then the opened
    copy, held in memory by whoever has the key, never written out; None until opened.
    Version 1 (``customer`` in clear) is still read.
    """

    schema_version: Literal[1, 2] = 1  # type: ignore[assignment]  # an upsert reads both
    kind: Literal["upsert"] = "upsert"
    customer: Customer | None = None
    sealed: Sealed | None = None
    home_region: str

    @model_validator(mode="after")
    def _customer_or_sealed(self) -> UpsertCustomer:
        if self.customer is None and self.sealed is None:
            raise ValueError("an upsert needs a customer or its sealed form")
        if (
            self.customer is not None
            and self.sealed is not None
            and self.customer.customer_id != self.sealed.customer_id
        ):
            raise ValueError("the sealed customer is another customer")
        return self

    @model_serializer(mode="wrap")
    def _never_in_clear_once_sealed(
        self, handler: SerializerFunctionWrapHandler
    ) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if self.sealed is not None:
            data.pop("customer", None)
            data["schema_version"] = 2
        else:
            data.pop("sealed", None)
        return data

    @property
    def key(self) -> str:
        if self.customer is not None:
            return self.customer.customer_id
        assert self.sealed is not None  # the validator's promise
        return self.sealed.customer_id

    @property
    def is_open(self) -> bool:
        """Whether the customer's fields are at hand (in clear, or opened with its key)."""
        return self.customer is not None


class DeleteCustomer(_CommandBase):
    """Replace the customer by a tombstone at ``version`` in every target region."""

    kind: Literal["delete"] = "delete"
    customer_id: CustomerId

    @model_validator(mode="after")
    def _only_tombstones(self) -> DeleteCustomer:
        if any(target.action is not Action.TOMBSTONE for target in self.targets):
            raise ValueError("a delete can only tombstone its targets")
        return self

    @property
    def key(self) -> str:
        return self.customer_id


Command = Annotated[UpsertCustomer | DeleteCustomer, Field(discriminator="kind")]
"""Any command; the one type every module names, decoded by its ``kind``."""
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def decode_command(raw: bytes) -> Command:
    """Decode a command from Kafka; raises pydantic.ValidationError on anything malformed."""
    return COMMAND_ADAPTER.validate_json(raw)


def encode_command(command: Command) -> bytes:
    """Encode a command for Kafka; ``republished``, ``position`` and ``after`` only where set,
    so a plain command reads as it did before they existed."""
    unset = _UNSET[command.republished, command.position is None, command.after is None]
    return command.model_dump_json(exclude=unset).encode()


_UNSET: dict[tuple[bool, bool, bool], set[str] | None] = {
    (republished, no_position, no_after): {
        name
        for name, left in (
            ("republished", not republished),
            ("position", no_position),
            ("after", no_after),
        )
        if left
    }
    or None
    for republished in (False, True)
    for no_position in (False, True)
    for no_after in (False, True)
}
