"""Customer validation as a user meets it, text folding, and commands on the wire."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from regionstore_shared.schemas import (
    UF_CODES,
    Action,
    Applier,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
    decode_command,
    encode_command,
    fold_text,
)

UF_MESSAGE = (
    "Value error, must be one of the 27 Brazilian UF codes (AC, AL, AM, AP, BA, CE, DF, ES, GO, "
    "MA, MG, MS, MT, PA, PB, PE, PI, PR, RJ, RN, RO, RR, RS, SC, SE, SP, TO)"
)
FIELDS = (
    "customer_id",
    "customer_unique_id",
    "customer_zip_code_prefix",
    "customer_city",
    "customer_state",
)


def olist_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
        "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
        "customer_zip_code_prefix": 14409,
        "customer_city": "franca",
        "customer_state": "SP",
    }
    row.update(changes)
    return row


def only_error(data: dict[str, object]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        Customer.model_validate(data)
    errors = caught.value.errors(include_url=False)
    assert len(errors) == 1, errors
    return dict(errors[0])


class TestCustomer:
    def test_an_olist_row_is_valid(self) -> None:
        customer = Customer.model_validate(olist_row())
        assert customer.model_dump() == olist_row()

    def test_customer_is_immutable(self) -> None:
        customer = Customer.model_validate(olist_row())
        with pytest.raises(ValidationError):
            customer.customer_city = "sao paulo"  # type: ignore[misc]

    @pytest.mark.parametrize("field", FIELDS)
    def test_each_missing_field_is_named(self, field: str) -> None:
        row = olist_row()
        del row[field]
        error = only_error(row)
        assert (error["loc"], error["type"], error["msg"]) == (
            (field,),
            "missing",
            "Field required",
        )

    @pytest.mark.parametrize("zip_prefix", ["12345", 12345.0, True])
    def test_zip_must_be_a_real_integer(self, zip_prefix: object) -> None:
        error = only_error(olist_row(customer_zip_code_prefix=zip_prefix))
        assert error["loc"] == ("customer_zip_code_prefix",)
        assert error["type"] == "int_type"
        assert error["msg"] == "Input should be a valid integer"

    def test_city_must_be_a_string(self) -> None:
        error = only_error(olist_row(customer_city=5))
        assert (error["loc"], error["type"]) == (("customer_city",), "string_type")
        assert error["msg"] == "Input should be a valid string"

    def test_state_must_be_a_string(self) -> None:
        error = only_error(olist_row(customer_state=35))
        assert (error["loc"], error["type"]) == (("customer_state",), "string_type")

    @pytest.mark.parametrize(
        ("zip_prefix", "kind", "message"),
        [
            (-1, "greater_than_equal", "Input should be greater than or equal to 0"),
            (100000, "less_than_equal", "Input should be less than or equal to 99999"),
        ],
    )
    def test_zip_outside_five_digits(self, zip_prefix: int, kind: str, message: str) -> None:
        error = only_error(olist_row(customer_zip_code_prefix=zip_prefix))
        assert (error["type"], error["msg"]) == (kind, message)

    @pytest.mark.parametrize("zip_prefix", [0, 99999])
    def test_zip_range_is_inclusive(self, zip_prefix: int) -> None:
        customer = Customer.model_validate(olist_row(customer_zip_code_prefix=zip_prefix))
        assert customer.customer_zip_code_prefix == zip_prefix

    @pytest.mark.parametrize(
        "unique_id",
        [
            "861eff4711a542e4b93843c6dd7febb",  # 31
            "861eff4711a542e4b93843c6dd7febb00",  # 33
            "861eff4711a542e4b93843c6dd7febbz",  # not hex
            "861eff47-1a54-2e4b-9384-3c6dd7febb",  # a UUID's dashes
        ],
    )
    def test_unique_id_must_be_32_hex(self, unique_id: str) -> None:
        error = only_error(olist_row(customer_unique_id=unique_id))
        assert error["loc"] == ("customer_unique_id",)
        assert error["type"] == "string_pattern_mismatch"
        assert error["msg"] == "String should match pattern '^[0-9a-f]{32}$'"

    def test_unique_id_is_normalised_to_lowercase(self) -> None:
        row = olist_row(customer_unique_id=" 861EFF4711A542E4B93843C6DD7FEBB0 ")
        customer = Customer.model_validate(row)
        assert customer.customer_unique_id == "861eff4711a542e4b93843c6dd7febb0"

    @pytest.mark.parametrize("state", ["XX", "xx", "S", "SPP", "", "São"])
    def test_state_must_be_a_uf_code_and_the_message_lists_them(self, state: str) -> None:
        error = only_error(olist_row(customer_state=state))
        assert (error["loc"], error["type"], error["msg"]) == (
            ("customer_state",),
            "value_error",
            UF_MESSAGE,
        )

    @pytest.mark.parametrize(("given", "stored"), [("sp", "SP"), (" rj ", "RJ"), ("Df", "DF")])
    def test_state_is_normalised_to_uppercase(self, given: str, stored: str) -> None:
        assert Customer.model_validate(olist_row(customer_state=given)).customer_state == stored

    def test_there_are_27_uf_codes(self) -> None:
        assert len(set(UF_CODES)) == 27

    def test_extra_field_is_forbidden(self) -> None:
        error = only_error(olist_row(customer_email="x@example.com"))
        assert (error["loc"], error["type"], error["msg"]) == (
            ("customer_email",),
            "extra_forbidden",
            "Extra inputs are not permitted",
        )

    @pytest.mark.parametrize("city", ["sao\npaulo", "sao\tpaulo", "franca\x00", "a\u200bb"])
    def test_city_with_control_characters(self, city: str) -> None:
        error = only_error(olist_row(customer_city=city))
        assert (error["loc"], error["type"], error["msg"]) == (
            ("customer_city",),
            "value_error",
            "Value error, must not contain control characters",
        )

    def test_city_keeps_accents_and_is_stripped(self) -> None:
        customer = Customer.model_validate(olist_row(customer_city="  São Paulo "))
        assert customer.customer_city == "São Paulo"

    def test_blank_city_is_too_short(self) -> None:
        error = only_error(olist_row(customer_city="   "))
        assert error["loc"] == ("customer_city",)
        # Every other text field says "String should have ... characters"; the city should too.
        assert (error["type"], error["msg"]) == (
            "string_too_short",
            "String should have at least 1 character",
        )

    def test_long_city_is_too_long(self) -> None:
        error = only_error(olist_row(customer_city="x" * 101))
        assert error["loc"] == ("customer_city",)
        assert (error["type"], error["msg"]) == (
            "string_too_long",
            "String should have at most 100 characters",
        )

    @pytest.mark.parametrize("customer_id", ["a b", "a/b", "ação", "a.b", "$in"])
    def test_id_with_bad_characters(self, customer_id: str) -> None:
        error = only_error(olist_row(customer_id=customer_id))
        assert (error["loc"], error["type"], error["msg"]) == (
            ("customer_id",),
            "string_pattern_mismatch",
            "String should match pattern '^[A-Za-z0-9_-]+$'",
        )

    def test_id_too_long(self) -> None:
        error = only_error(olist_row(customer_id="a" * 65))
        assert (error["type"], error["msg"]) == (
            "string_too_long",
            "String should have at most 64 characters",
        )

    def test_id_of_64_characters_is_accepted(self) -> None:
        assert (
            Customer.model_validate(olist_row(customer_id="A_-9" * 16)).customer_id == "A_-9" * 16
        )


class TestFoldText:
    def test_accents_case_and_spaces_fold_alike(self) -> None:
        assert fold_text("São Paulo") == fold_text("sao  PAULO") == "sao paulo"

    def test_ribeirao_preto(self) -> None:
        assert fold_text("Ribeirão Preto") == "ribeirao preto"

    def test_outer_whitespace_is_dropped(self) -> None:
        assert fold_text("  Goiânia\t") == "goiania"

    def test_different_cities_stay_different(self) -> None:
        assert fold_text("Santos") != fold_text("Santo")


def upsert_command(**changes: Any) -> UpsertCustomer:
    fields: dict[str, Any] = {
        "command_id": uuid.UUID("6f1c1d5e-1a2b-4c3d-8e9f-001122334455"),
        "version": 7_000_000_000,
        "issued_at_ms": 1_700_000_000_000,
        "targets": (
            Target(region="region_1", role=Applier.WRITER, action=Action.UPSERT),
            Target(region="region_3", role=Applier.REPLICATOR, action=Action.UPSERT),
            Target(region="region_2", role=Applier.REPLICATOR, action=Action.TOMBSTONE),
        ),
        "customer": Customer.model_validate(olist_row()),
        "home_region": "region_1",
    }
    fields.update(changes)
    return UpsertCustomer(**fields)


def delete_command() -> DeleteCustomer:
    return DeleteCustomer(
        command_id=uuid.uuid4(),
        version=42,
        issued_at_ms=1,
        targets=(Target(region="region_2", role=Applier.WRITER, action=Action.TOMBSTONE),),
        customer_id="abc",
    )


def raw_delete(**changes: object) -> bytes:
    data = json.loads(encode_command(delete_command()))
    data.update(changes)
    return json.dumps(data).encode()


class TestCommandWire:
    def test_upsert_round_trip(self) -> None:
        command = upsert_command()
        decoded = decode_command(encode_command(command))
        assert isinstance(decoded, UpsertCustomer)
        assert decoded == command
        assert decoded.key == "06b8999e2fba1a1fbc88172c00ba8bc7"

    def test_delete_round_trip(self) -> None:
        command = delete_command()
        decoded = decode_command(encode_command(command))
        assert isinstance(decoded, DeleteCustomer)
        assert decoded == command
        assert decoded.key == "abc"

    def test_encoding_carries_kind_and_schema_version(self) -> None:
        data = json.loads(encode_command(upsert_command()))
        assert (data["kind"], data["schema_version"]) == ("upsert", 1)

    def test_garbage_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            decode_command(b"\x00not json")
        assert caught.value.errors()[0]["type"] == "json_invalid"

    def test_unknown_kind_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            decode_command(raw_delete(kind="rename"))
        assert caught.value.errors()[0]["type"] == "union_tag_invalid"

    def test_missing_kind_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            decode_command(b"{}")
        assert caught.value.errors()[0]["type"] == "union_tag_not_found"

    def test_other_schema_version_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            decode_command(raw_delete(schema_version=2))
        error = caught.value.errors()[0]
        assert (error["loc"], error["type"]) == (("delete", "schema_version"), "literal_error")

    def test_command_without_targets_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as caught:
            decode_command(raw_delete(targets=[]))
        assert caught.value.errors()[0]["loc"] == ("delete", "targets")

    def test_version_zero_is_rejected(self) -> None:
        with pytest.raises(ValidationError):
            decode_command(raw_delete(version=0))

    def test_extra_field_is_rejected(self) -> None:
        with pytest.raises(ValidationError):
            decode_command(raw_delete(sneaky=True))

    def test_upsert_with_an_invalid_customer_is_rejected(self) -> None:
        data = json.loads(encode_command(upsert_command()))
        data["customer"]["customer_state"] = "XX"
        with pytest.raises(ValidationError):
            decode_command(json.dumps(data).encode())

    def test_delete_with_an_upsert_target_is_rejected(self) -> None:
        # A delete has no document to upsert: apply would raise ValueError on it, which is
        # not a PyMongoError, so the batch would fail forever instead of being dead-lettered.
        targets = [{"region": "region_1", "role": "home", "action": "upsert"}]
        with pytest.raises(ValidationError):
            decode_command(raw_delete(targets=targets))


# A delete as the gateway published it before targets named their applier: bytes that may still
# be parked in a parking topic.
PARKED_DELETE = (
    b'{"schema_version":1,"command_id":"6f1c1d5e-1a2b-4c3d-8e9f-001122334455",'
    b'"version":42,"issued_at_ms":1,"targets":['
    b'{"region":"region_1","role":"home","action":"tombstone"},'
    b'{"region":"region_2","role":"replica","action":"tombstone"}],'
    b'"kind":"delete","customer_id":"abc"}'
)


class TestApplierOnTheWire:
    def test_a_parked_command_decodes_with_its_appliers(self) -> None:
        decoded = decode_command(PARKED_DELETE)
        assert isinstance(decoded, DeleteCustomer)
        assert [(t.region, t.role) for t in decoded.targets] == [
            ("region_1", Applier.WRITER),
            ("region_2", Applier.REPLICATOR),
        ]

    def test_the_spelling_on_the_wire_is_unchanged(self) -> None:
        # Consumers of the previous release read these values only: a command must decode there.
        assert json.loads(encode_command(decode_command(PARKED_DELETE))) == json.loads(
            PARKED_DELETE
        )

    def test_the_applier_names_are_accepted_too(self) -> None:
        # So that a later release can emit them once every consumer runs this one.
        renamed = PARKED_DELETE.replace(b'"home"', b'"writer"').replace(
            b'"replica"', b'"replicator"'
        )
        assert decode_command(renamed) == decode_command(PARKED_DELETE)

    def test_an_unknown_applier_is_rejected(self) -> None:
        with pytest.raises(ValidationError):
            decode_command(PARKED_DELETE.replace(b'"replica"', b'"mirror"'))
