"""Which failed region writes park the region's commands and which dead-letter one command."""

from __future__ import annotations

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    CursorNotFound,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from regionstore_shared.failures import (
    TRANSIENT_CODES,
    Failure,
    classify,
    classify_code,
    classify_write_errors,
    describe,
    describe_write_error,
    sqlstate_code,
)

SERVER_TRANSIENT_CODES = {
    "HostUnreachable": 6,
    "HostNotFound": 7,
    "NetworkTimeout": 89,
    "ShutdownInProgress": 91,
    "PrimarySteppedDown": 189,
    "ExceededTimeLimit": 262,
    "SocketException": 9001,
    "NotWritablePrimary": 10107,
    "InterruptedAtShutdown": 11600,
    "InterruptedDueToReplStateChange": 11602,
    "NotPrimaryNoSecondaryOk": 13435,
    "NotPrimaryOrSecondary": 13436,
    "MaxTimeMSExpired": 50,
    "WriteConcernFailed": 64,
    "FerretDB InternalError (PostgreSQL unreachable)": 1,
}

PERMANENT_CODES = {
    "BadValue": 2,
    "FailedToParse": 9,
    "TypeMismatch": 14,
    "DollarPrefixedFieldName": 52,
    "EmptyFieldName": 56,
    "ImmutableField": 66,
    "DocumentValidationFailure": 121,
    "BSONObjectTooLarge": 10334,
    "DuplicateKey": 11000,
    "document too large": 17419,
}


def bulk(*codes: int, concern: bool = False) -> BulkWriteError:
    return BulkWriteError(
        {
            "writeErrors": [
                {"index": i, "code": code, "errmsg": f"error {code}"}
                for i, code in enumerate(codes)
            ],
            "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}] if concern else [],
        }
    )


class TestClassify:
    @pytest.mark.parametrize(
        "error",
        [
            ConnectionFailure("refused"),
            AutoReconnect("reset"),
            NetworkTimeout("timed out"),
            NotPrimaryError("not primary", {"code": 10107}),
            ServerSelectionTimeoutError("no servers"),
            WaitQueueTimeoutError("pool full"),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_connection_failures_are_transient(self, error: Exception) -> None:
        assert classify(error) is Failure.TRANSIENT

    @pytest.mark.parametrize(
        "error",
        [
            ExecutionTimeout("operation exceeded time limit", 50),
            WTimeoutError("waiting for replication timed out", 64),
            WriteConcernError("write concern failed", 100),
        ],
        ids=lambda error: type(error).__name__,
    )
    def test_timeouts_and_write_concern_errors_are_transient(self, error: Exception) -> None:
        assert classify(error) is Failure.TRANSIENT

    @pytest.mark.parametrize("code", SERVER_TRANSIENT_CODES.values(), ids=SERVER_TRANSIENT_CODES)
    def test_server_transient_codes_are_transient(self, code: int) -> None:
        assert classify(OperationFailure("failed", code)) is Failure.TRANSIENT
        assert classify(bulk(code)) is Failure.TRANSIENT
        assert classify_code(code) is Failure.TRANSIENT

    @pytest.mark.parametrize("label", ["RetryableWriteError", "TransientTransactionError"])
    def test_a_transient_label_makes_any_code_transient(self, label: str) -> None:
        error = OperationFailure("failed", 2, {"code": 2, "errorLabels": [label]})
        assert classify(error) is Failure.TRANSIENT
        labelled_bulk = BulkWriteError(
            {"writeErrors": [{"index": 0, "code": 121}], "errorLabels": [label]}
        )
        assert classify(labelled_bulk) is Failure.TRANSIENT

    @pytest.mark.parametrize("code", PERMANENT_CODES.values(), ids=PERMANENT_CODES)
    def test_the_documents_own_codes_are_permanent(self, code: int) -> None:
        assert classify(OperationFailure("refused", code)) is Failure.PERMANENT
        assert classify(bulk(code)) is Failure.PERMANENT
        assert classify_code(code) is Failure.PERMANENT

    def test_write_errors_and_cursor_errors_are_server_answers(self) -> None:
        assert classify(WriteError("invalid", 121)) is Failure.PERMANENT
        assert classify(DuplicateKeyError("E11000", 11000)) is Failure.PERMANENT
        # A server answer, but about the cursor, not the document: transient.
        assert classify(CursorNotFound("cursor gone", 43)) is Failure.TRANSIENT

    @pytest.mark.parametrize(
        "error",
        [InvalidDocument("cannot encode object"), DocumentTooLarge("over 16 MiB")],
        ids=lambda error: type(error).__name__,
    )
    def test_a_document_the_driver_cannot_encode_is_permanent(self, error: Exception) -> None:
        assert classify(error) is Failure.PERMANENT

    @pytest.mark.parametrize(
        "error",
        [InvalidOperation("client closed"), ConfigurationError("bad uri")],
        ids=lambda error: type(error).__name__,
    )
    def test_driver_state_errors_are_transient(self, error: Exception) -> None:
        # Not the document's fault: every command would fail the same way.
        assert classify(error) is Failure.TRANSIENT

    def test_an_error_without_a_code_is_transient(self) -> None:
        assert classify(OperationFailure("no code")) is Failure.TRANSIENT
        assert classify_code(None) is Failure.TRANSIENT


class TestClassifyWriteErrors:
    def test_a_write_concern_error_makes_the_request_transient(self) -> None:
        assert classify(bulk(concern=True)) is Failure.TRANSIENT
        assert classify(bulk(11000, concern=True)) is Failure.TRANSIENT
        assert classify(bulk(121, concern=True)) is Failure.TRANSIENT

    def test_one_transient_item_makes_the_request_transient(self) -> None:
        assert classify(bulk(121, 11000, 91)) is Failure.TRANSIENT

    def test_items_refused_for_themselves_are_permanent(self) -> None:
        assert classify(bulk(121, 11000, 2)) is Failure.PERMANENT

    def test_a_failure_that_names_no_document_is_transient(self) -> None:
        assert classify_write_errors({"writeErrors": [], "writeConcernErrors": []}) is (
            Failure.TRANSIENT
        )
        assert classify_write_errors({}) is Failure.TRANSIENT


class TestTable:
    def test_the_documented_transient_codes_are_all_in_the_set(self) -> None:
        assert set(SERVER_TRANSIENT_CODES.values()) <= TRANSIENT_CODES

    def test_no_permanent_example_is_in_the_set(self) -> None:
        assert TRANSIENT_CODES.isdisjoint(PERMANENT_CODES.values())


class TestDescribe:
    def test_names_the_type_and_code(self) -> None:
        assert describe(OperationFailure("too large", 10334)).startswith(
            "OperationFailure 10334: too large"
        )
        assert describe(AutoReconnect("reset")) == "AutoReconnect: reset"

    def test_a_write_error(self) -> None:
        error = {"index": 3, "code": 121, "errmsg": "Document failed validation"}
        assert describe_write_error(error) == "WriteError 121: Document failed validation"

    def test_is_bounded(self) -> None:
        assert len(describe(OperationFailure("x" * 5000, 2))) < 1100


class TestPostgresStates:
    @pytest.mark.parametrize(
        ("sqlstate", "code"),
        [("40P01", 16908292), ("40001", 16777220), ("53300", 12485), ("22P02", 33685634)],
    )
    def test_a_sqlstate_packs_as_documentdb_answers_it(self, sqlstate: str, code: int) -> None:
        assert sqlstate_code(sqlstate) == code

    def test_a_deadlock_in_a_bulk_write_is_transient(self) -> None:
        # As the local store answered a deadlock between two appliers (seen in a fault test).
        error = BulkWriteError(
            {
                "writeErrors": [
                    {"index": 0, "code": 16908292, "errmsg": "deadlock detected"},
                    {"index": 3, "code": 16777220, "errmsg": "could not serialize access"},
                ],
                "writeConcernErrors": [],
            }
        )
        assert classify(error) is Failure.TRANSIENT

    def test_invalid_text_representation_stays_permanent(self) -> None:
        assert classify_code(sqlstate_code("22P02")) is Failure.PERMANENT

    def test_a_sqlstate_has_five_characters(self) -> None:
        with pytest.raises(ValueError, match="five characters"):
            sqlstate_code("40P0")


class TestUnknownCodes:
    @pytest.mark.parametrize(
        "code",
        [
            2600,  # DocumentDB: postmaster was shut down while establishing libpq connection
            4,  # an unlisted MongoDB code
            123456,
            sqlstate_code("XX000"),  # internal_error
            sqlstate_code("42P01"),  # undefined_table
        ],
    )
    def test_a_code_not_known_to_be_the_documents_is_transient(self, code: int) -> None:
        assert classify_code(code) is Failure.TRANSIENT
        assert classify(bulk(code)) is Failure.TRANSIENT

    @pytest.mark.parametrize("sqlstate", ["22P02", "22003", "23502", "23514"])
    def test_postgres_data_and_integrity_errors_are_permanent(self, sqlstate: str) -> None:
        assert classify_code(sqlstate_code(sqlstate)) is Failure.PERMANENT
