"""Pure helpers of the customer routes: list filters and paging cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from regionstore_gateway.adapters.list_order import Order
from regionstore_gateway.adapters.repository import CustomerFilter
from regionstore_gateway.services.customers import validate_filter
from regionstore_gateway.services.paging import decode_cursor, encode_cursor

REGIONS = ("region_1", "region_2", "region_3")


def only_error(error: RequestValidationError) -> dict[str, Any]:
    (detail,) = error.errors()
    return dict(detail)


class TestCursor:
    def test_round_trip(self) -> None:
        query = CustomerFilter(zip_min=1000, state="SP")
        cursor = encode_cursor((1000, "c-42"), Order.ZIP, query)
        assert decode_cursor(cursor, [Order.ZIP], query) == (Order.ZIP, (1000, "c-42"))

    def test_cursor_is_url_safe_and_unpadded(self) -> None:
        query = CustomerFilter(city="São Paulo")
        cursor = encode_cursor(("são paulo ???>>>", "c"), Order.CITY, query)
        assert not set(cursor) & set("+/=")

    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor",
            "!!!!",
            "a",
            base64.urlsafe_b64encode(b"[1, 2]").decode(),
            base64.urlsafe_b64encode(b'"after"').decode(),
            base64.urlsafe_b64encode(b'{"after": "x"}').decode(),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        ],
    )
    def test_malformed_cursor_is_a_422_on_the_cursor(self, cursor: str) -> None:
        with pytest.raises(RequestValidationError) as caught:
            decode_cursor(cursor, [Order.ID], CustomerFilter())
        error = only_error(caught.value)
        assert error["loc"] == ("query", "cursor")
        assert error["msg"] == "is not a cursor this API issued"

    def test_tampered_cursor_is_rejected(self) -> None:
        query = CustomerFilter()
        cursor = encode_cursor(("c-42",), Order.ID, query)
        tampered = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
        with pytest.raises(RequestValidationError) as caught:
            decode_cursor(tampered, [Order.ID], query)
        assert only_error(caught.value)["loc"] == ("query", "cursor")

    @pytest.mark.parametrize("key", [[5], ["c", "d"], [None], "c"])
    def test_cursor_whose_key_is_not_of_its_order_is_rejected(self, key: object) -> None:
        query = CustomerFilter()
        real = json.loads(base64.urlsafe_b64decode(encode_cursor(("c",), Order.ID, query) + "=="))
        forged = json.dumps({**real, "k": key}).encode()
        with pytest.raises(RequestValidationError) as caught:
            decode_cursor(base64.urlsafe_b64encode(forged).decode(), [Order.ID], query)
        assert only_error(caught.value)["msg"] == "is not a cursor this API issued"

    def test_cursor_from_another_query_is_rejected(self) -> None:
        cursor = encode_cursor(("c-42",), Order.ID, CustomerFilter(state="SP"))
        with pytest.raises(RequestValidationError) as caught:
            decode_cursor(cursor, [Order.ID], CustomerFilter(state="RJ"))
        error = only_error(caught.value)
        assert error["loc"] == ("query", "cursor")
        assert error["msg"] == "belongs to a different query"


class TestValidateFilter:
    def test_a_unique_id_is_any_case_hex(self) -> None:
        query = validate_filter(REGIONS, None, None, None, None, None, " AB" + "c" * 30 + " ")
        assert query.unique_id == "ab" + "c" * 30

    @pytest.mark.parametrize("text", ["abc", "g" * 32, "a" * 33])
    def test_a_unique_id_that_is_not_32_hex_is_a_422_on_it(self, text: str) -> None:
        with pytest.raises(RequestValidationError) as caught:
            validate_filter(REGIONS, None, None, None, None, None, text)
        assert only_error(caught.value)["loc"] == ("query", "unique_id")

    def test_everything_is_optional(self) -> None:
        assert validate_filter(REGIONS, None, None, None, None, None) == CustomerFilter()

    def test_values_pass_through(self) -> None:
        query = validate_filter(REGIONS, 1000, 2000, " franca ", "SP", "region_1")
        assert query == CustomerFilter(
            zip_min=1000, zip_max=2000, city="franca", state="SP", region="region_1"
        )

    def test_equal_zip_bounds_are_allowed(self) -> None:
        assert validate_filter(REGIONS, 5000, 5000, None, None, None).zip_max == 5000

    def test_zip_min_above_zip_max(self) -> None:
        with pytest.raises(RequestValidationError) as caught:
            validate_filter(REGIONS, 2000, 1000, None, None, None)
        error = only_error(caught.value)
        assert (error["loc"], error["msg"], error["type"]) == (
            ("query", "zip_max"),
            "must be >= zip_min (2000)",
            "value_error",
        )

    @pytest.mark.parametrize(("given", "code"), [("sp", "SP"), (" rj ", "RJ"), ("Mg", "MG")])
    def test_state_is_normalised(self, given: str, code: str) -> None:
        assert validate_filter(REGIONS, None, None, None, given, None).state == code

    @pytest.mark.parametrize("state", ["XX", "S", "São Paulo"])
    def test_bad_state(self, state: str) -> None:
        with pytest.raises(RequestValidationError) as caught:
            validate_filter(REGIONS, None, None, None, state, None)
        error = only_error(caught.value)
        assert error["loc"] == ("query", "state")
        assert error["msg"].startswith("must be one of AC, AL, AM")
        assert error["msg"].endswith("SP, TO")

    def test_unknown_region(self) -> None:
        with pytest.raises(RequestValidationError) as caught:
            validate_filter(REGIONS, None, None, None, None, "region_9")
        error = only_error(caught.value)
        assert (error["loc"], error["msg"]) == (
            ("query", "region"),
            "must be one of region_1, region_2, region_3",
        )

    @pytest.mark.parametrize("city", ["", "   "])
    def test_blank_city_means_no_city_filter(self, city: str) -> None:
        assert validate_filter(REGIONS, None, None, city, None, None).city is None

    def test_blank_state_means_no_state_filter(self) -> None:
        assert validate_filter(REGIONS, None, None, None, "", None).state is None
