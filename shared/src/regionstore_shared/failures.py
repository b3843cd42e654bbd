"""Which failed region writes are the region's fault and which are the command's.

A **transient** failure says nothing about the commands: the store, its network, its replica set
or the client is in trouble. The applier parks what it has not written for that region and holds
the region suspect; replaying the commands later succeeds. A **permanent** failure is the store
refusing one document (it fails its validation, is too large, holds a field the store rejects):
replaying it would fail forever, so only that command goes to the dead-letter topic and the rest
of the batch goes on.

Only errors known to be about the document are permanent (:data:`PERMANENT_CODES`, and
PostgreSQL's data and integrity classes as DocumentDB passes them through); everything else is
transient. A parked command waits and is never lost, whereas a dead-lettered one leaves the apply
path until someone replays it by hand; and a store in front of PostgreSQL answers outages with
codes of its own (DocumentDB's 2600, "postmaster was shut down while establishing libpq
connection", dead-lettered an acknowledged write while the default was the other way).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from bson.errors import InvalidDocument
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)


class Failure(StrEnum):
    """What a failed write means for the commands in it."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


#: Server error codes that are about the server, not the document written.
TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        # FerretDB answers InternalError when its PostgreSQL is unreachable or fails (connection
        # refused, shutdown, serialization failure): the local store's "region down".
        1,
        6,  # HostUnreachable
        7,  # HostNotFound
        13,  # Unauthorized: the region's credentials, not the document
        18,  # AuthenticationFailed
        24,  # LockTimeout
        46,  # LockBusy
        50,  # MaxTimeMSExpired (ExecutionTimeout)
        64,  # WriteConcernFailed (WTimeoutError)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        391,  # ReauthenticationRequired
        9001,  # SocketException
        10058,  # LegacyNotPrimary
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


def sqlstate_code(sqlstate: str) -> int:
    """The error code DocumentDB answers for a PostgreSQL SQLSTATE it does not map to a MongoDB
    code: PostgreSQL's own packing of the five characters, six bits each, first one lowest."""
    if len(sqlstate) != 5:
        raise ValueError(f"a SQLSTATE has five characters: {sqlstate!r}")
    return sum(((ord(ch) - ord("0")) & 0x3F) << (6 * i) for i, ch in enumerate(sqlstate))


#: PostgreSQL failures that DocumentDB (the local store) passes through, all about the moment and
#: never the document: a retry clears them. Two appliers writing overlapping customers in one
#: region can deadlock (40P01): PostgreSQL then aborts one of them, which must be parked and
#: replayed, not dead-lettered.
TRANSIENT_SQLSTATES: frozenset[str] = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "53000",  # insufficient_resources
        "53100",  # disk_full
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "57014",  # query_canceled (statement timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "08000",  # connection_exception
        "08003",  # connection_does_not_exist
        "08006",  # connection_failure
    }
)

TRANSIENT_CODES = TRANSIENT_CODES | {sqlstate_code(state) for state in TRANSIENT_SQLSTATES}

#: Server error codes that are about the document written: a retry fails the same way.
PERMANENT_CODES: frozenset[int] = frozenset(
    {
        2,  # BadValue
        9,  # FailedToParse
        14,  # TypeMismatch
        17,  # InvalidLength
        28,  # PathNotViable
        52,  # DollarPrefixedFieldName
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        66,  # ImmutableField
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        11000,  # DuplicateKey (the insert step handles it; elsewhere it is the document's)
        16755,  # cannot index the document
        17280,  # KeyTooLong
        17419,  # document too large
    }
)

#: PostgreSQL classes about the data itself (data exception, integrity constraint violation), as
#: DocumentDB answers them when it has no MongoDB code for them.
PERMANENT_SQLSTATE_CLASSES: frozenset[str] = frozenset({"22", "23"})

#: Labels the server puts on errors that a retry may clear.
TRANSIENT_LABELS: frozenset[str] = frozenset({"RetryableWriteError", "TransientTransactionError"})

#: What a region write can raise: the driver's errors, and BSON's for a document it cannot encode
#: (``DocumentTooLarge`` is one).
WRITE_ERRORS = (PyMongoError, InvalidDocument)


def _sqlstate_class(code: int) -> str | None:
    """The two-character class of a packed SQLSTATE; None for a code too small to be one."""
    if code < 1 << 24:  # a SQLSTATE ending in 0 would collide with MongoDB's own codes
        return None
    return "".join(chr(((code >> (6 * i)) & 0x3F) + ord("0")) for i in range(2))


def classify_code(code: int | None) -> Failure:
    """Classify one server error by its code: permanent only when known to be the document's."""
    if code is None or code in TRANSIENT_CODES:
        return Failure.TRANSIENT
    if code in PERMANENT_CODES or _sqlstate_class(code) in PERMANENT_SQLSTATE_CLASSES:
        return Failure.PERMANENT
    return Failure.TRANSIENT


def classify_write_errors(details: Mapping[str, Any]) -> Failure:
    """Classify a bulk write's result details (``writeErrors``, ``writeConcernErrors``).

    Any write concern error makes the whole request transient: nothing in it is known to be
    durable. So does any transient per-document error, or a failure that names no document.
    Otherwise every failed document was refused for itself: permanent.
    """
    if details.get("writeConcernErrors"):
        return Failure.TRANSIENT
    errors: list[Mapping[str, Any]] = details.get("writeErrors", [])
    if not errors:
        return Failure.TRANSIENT
    if any(classify_code(e.get("code")) is Failure.TRANSIENT for e in errors):
        return Failure.TRANSIENT
    return Failure.PERMANENT


def classify(error: BaseException) -> Failure:
    """Classify an exception raised by a region write.

    Transient: connection failures of every kind (``AutoReconnect``, ``NetworkTimeout``,
    ``NotPrimaryError``, ``ServerSelectionTimeoutError``, ``WaitQueueTimeoutError``), write
    concern errors (``WTimeoutError`` included), ``ExecutionTimeout``, server errors with a code
    in :data:`TRANSIENT_CODES` or a label in :data:`TRANSIENT_LABELS`, any code not known to be
    the document's, and driver errors that are not the server's answer (``InvalidOperation``,
    ``ConfigurationError``, ...): those are this process's state, not the document's. Permanent:
    a server error whose code is the document's (see :func:`classify_code`), and a document the
    driver cannot encode (``InvalidDocument``, ``DocumentTooLarge``).
    """
    if isinstance(error, InvalidDocument):
        return Failure.PERMANENT
    if isinstance(error, ConnectionFailure | WriteConcernError):
        return Failure.TRANSIENT
    if isinstance(error, PyMongoError) and any(map(error.has_error_label, TRANSIENT_LABELS)):
        return Failure.TRANSIENT
    if isinstance(error, BulkWriteError):
        return classify_write_errors(error.details)
    if isinstance(error, OperationFailure):
        return classify_code(error.code)
    return Failure.TRANSIENT


def describe(error: BaseException) -> str:
    """A short reason for logs and dead-letter headers: the error's type, code and message."""
    code = getattr(error, "code", None)
    prefix = type(error).__name__ if code is None else f"{type(error).__name__} {code}"
    return f"{prefix}: {str(error)[:1000]}"


def describe_write_error(error: Mapping[str, Any]) -> str:
    """The reason one document of a bulk write was refused."""
    return f"WriteError {error.get('code')}: {str(error.get('errmsg', ''))[:1000]}"
