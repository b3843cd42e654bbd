"""How each filter walks its index, and how the regions' walks merge into a page."""

from __future__ import annotations

import pytest

from regionstore_gateway.adapters.list_order import Order, Plan, Walk, merge, plans
from regionstore_shared import indexes
from regionstore_shared.schemas import fold_text

HOME = {"_home": "region_1", "_deleted": False}


def plan(*, zip_min: int | None, zip_max: int | None, city: str | None, state: str | None) -> Plan:
    """The default walk of a filter."""
    return plans(zip_min=zip_min, zip_max=zip_max, city=city, state=state)[0]


def walk_of(
    zip_min: int | None = None,
    zip_max: int | None = None,
    city: str | None = None,
    state: str | None = None,
) -> tuple[Order, str]:
    chosen = plan(zip_min=zip_min, zip_max=zip_max, city=city, state=state)
    return chosen.order, chosen.index


class TestPlan:
    @pytest.mark.parametrize(
        ("filters", "order", "index"),
        [
            ({}, Order.ID, indexes.HOME_ID),
            ({"state": "SP"}, Order.ID, indexes.STATE_ID),
            ({"city": "sao"}, Order.CITY, indexes.CITY_ID),
            ({"city": "sao", "state": "SP"}, Order.CITY, indexes.STATE_CITY_ID),
            ({"zip_min": 1000}, Order.ZIP, indexes.ZIP_ID),
            ({"zip_max": 1000, "state": "SP"}, Order.ZIP, indexes.STATE_ZIP_ID),
            ({"zip_min": 1000, "city": "sao"}, Order.ZIP, indexes.ZIP_ID),
            ({"zip_min": 1000, "city": "sao", "state": "SP"}, Order.ZIP, indexes.STATE_ZIP_ID),
        ],
    )
    def test_each_shape_walks_the_index_its_order_needs(
        self, filters: dict[str, object], order: Order, index: str
    ) -> None:
        assert walk_of(**filters) == (order, index)  # type: ignore[arg-type]

    def test_a_zip_range_with_a_city_may_walk_either_index_and_test_the_other(self) -> None:
        by_zip, by_city = plans(zip_min=1, zip_max=9, city="São", state="SP")
        assert (by_zip.order, by_zip.index) == (Order.ZIP, indexes.STATE_ZIP_ID)
        assert by_zip.residual == {"_city_key": {"$gte": "sao", "$lt": "sap"}}
        assert (by_city.order, by_city.index) == (Order.CITY, indexes.STATE_CITY_ID)
        assert by_city.residual == {"customer_zip_code_prefix": {"$gte": 1, "$lte": 9}}

    def test_a_unique_id_walks_its_few_entries_by_id_testing_everything_else(self) -> None:
        (walk,) = plans(zip_min=1, zip_max=None, city="Rio", state="RJ", unique_id="ab" * 16)
        assert (walk.order, walk.index, walk.residual) == (Order.ID, indexes.UNIQUE_ID, None)
        assert walk.segments("region_1", ("c",)) == [
            {
                **HOME,
                "customer_unique_id": "ab" * 16,
                "customer_state": "RJ",
                "customer_zip_code_prefix": {"$gte": 1},
                "_city_key": {"$gte": "rio", "$lt": "rip"},
                "_id": {"$gt": "c"},
            }
        ]

    def test_no_other_shape_tests_anything_after_the_walk(self) -> None:
        assert plan(zip_min=1, zip_max=None, city=None, state="SP").residual is None
        assert plan(zip_min=None, zip_max=None, city="sao", state="SP").residual is None

    def test_an_index_order_the_api_states(self) -> None:
        assert Order.ZIP.api_fields == ["customer_zip_code_prefix", "customer_id"]
        assert Order.CITY.key({"_id": "a", "_city_key": "sao paulo"}) == ("sao paulo", "a")


class TestSegments:
    def test_the_first_page_is_one_walk_of_the_whole_range(self) -> None:
        chosen = plan(zip_min=1000, zip_max=2000, city=None, state="SP")
        assert chosen.segments("region_1", None) == [
            {
                **HOME,
                "customer_state": "SP",
                "customer_zip_code_prefix": {"$gte": 1000, "$lte": 2000},
            }
        ]
        assert chosen.sort() == [("customer_zip_code_prefix", 1), ("_id", 1)]

    def test_in_id_order_a_page_continues_after_the_id(self) -> None:
        chosen = plan(zip_min=None, zip_max=None, city=None, state="SP")
        assert chosen.segments("region_1", ("c-9",)) == [
            {**HOME, "customer_state": "SP", "_id": {"$gt": "c-9"}}
        ]

    def test_after_a_zip_the_rest_of_it_then_the_zips_above_by_a_bound_the_index_seeks(
        self,
    ) -> None:
        chosen = plan(zip_min=1000, zip_max=2000, city=None, state=None)
        assert chosen.segments("region_1", (1500, "c-9")) == [
            {**HOME, "customer_zip_code_prefix": 1500, "_id": {"$gt": "c-9"}},
            {**HOME, "customer_zip_code_prefix": {"$gte": 1501, "$lte": 2000}},
        ]

    def test_after_the_last_zip_of_the_range_only_its_rest_is_walked(self) -> None:
        chosen = plan(zip_min=None, zip_max=2000, city=None, state=None)
        assert chosen.segments("region_1", (2000, "c-9")) == [
            {**HOME, "customer_zip_code_prefix": 2000, "_id": {"$gt": "c-9"}}
        ]

    def test_after_a_city_the_cities_above_it_start_past_every_key_equal_to_it(self) -> None:
        chosen = plan(zip_min=None, zip_max=None, city="Sao", state=None)
        rest = chosen.segments("region_1", ("sao paulo", "c-9"))
        assert rest == [
            {**HOME, "_city_key": "sao paulo", "_id": {"$gt": "c-9"}},
            {**HOME, "_city_key": {"$gte": "sao paulo\x01", "$lt": "sap"}},
        ]

    def test_a_cursor_value_outside_the_filter_walks_nothing_of_it(self) -> None:
        assert plan(zip_min=1000, zip_max=2000, city=None, state=None).segments(
            "region_1", (10, "x")
        ) == [{**HOME, "customer_zip_code_prefix": {"$gte": 1000, "$lte": 2000}}]
        city = plan(zip_min=None, zip_max=None, city="rio", state=None)
        assert len(city.segments("region_1", ("sao paulo", "x"))) == 1

    @pytest.mark.parametrize(
        "city", [".*", "a+b", "(x|y)", "[a-z]", "^$", r"\d", "\U0010ffff", "a\ud7ff"]
    )
    def test_city_text_is_a_range_of_the_keys_it_starts_never_a_pattern(self, city: str) -> None:
        (segment,) = plan(zip_min=None, zip_max=None, city=city, state=None).segments(
            "region_1", None
        )
        bounds = segment["_city_key"]
        folded = fold_text(city)

        def admitted(key: str) -> bool:
            return bounds["$gte"] <= key and ("$lt" not in bounds or key < bounds["$lt"])

        assert set(bounds) <= {"$gte", "$lt"}
        for key in (folded, folded + " x", folded + "\U0010ffff"):
            assert admitted(key)
        for key in ("zzz", folded[:-1], folded[:-1] + "\U0010ffff", "\U0010ffff\U0010ffff"):
            assert not admitted(key) or key.startswith(folded)
        if "$lt" in bounds:
            bounds["$lt"].encode()  # a real text: no lone surrogate


class TestValidKey:
    @pytest.mark.parametrize(
        ("order", "key", "valid"),
        [
            (Order.ID, ["a"], True),
            (Order.ID, [1], False),
            (Order.ID, ["a", "b"], False),
            (Order.ZIP, [1000, "a"], True),
            (Order.ZIP, ["1000", "a"], False),
            (Order.ZIP, [True, "a"], False),
            (Order.CITY, ["sao", "a"], True),
            (Order.CITY, ["sao", 3], False),
            (Order.CITY, ["sao"], False),
        ],
    )
    def test_a_key_has_its_orders_shape(self, order: Order, key: list[object], valid: bool) -> None:
        assert order.valid(key) is valid


def walk(keys: list[str], reach: str | None) -> Walk[str]:
    return Walk(keys, None if reach is None else (reach,), len(keys))


def by_self(row: str) -> tuple[str]:
    return (row,)


class TestMerge:
    def test_walks_that_all_ended_merge_whole_and_end_the_list(self) -> None:
        merged = merge([walk(["a", "d"], None), walk(["b"], None)], by_self, 5)
        assert (merged.rows, merged.next_after) == (["a", "b", "d"], None)

    def test_more_rows_than_the_page_continue_after_its_last(self) -> None:
        merged = merge([walk(["a", "c", "e"], "e"), walk(["b", "d"], None)], by_self, 2)
        assert (merged.rows, merged.next_after) == (["a", "b"], ("b",))

    def test_a_walk_stopped_on_its_budget_ends_the_page_where_it_stopped(self) -> None:
        # The stopped walk may hold rows after "c" it has not read: "d" must wait.
        merged = merge([walk([], "c"), walk(["a", "d"], None)], by_self, 5)
        assert (merged.rows, merged.next_after) == (["a"], ("c",))

    def test_a_page_may_be_empty_and_still_go_on(self) -> None:
        merged = merge([walk([], "m"), walk(["x"], None)], by_self, 5)
        assert (merged.rows, merged.next_after) == ([], ("m",))
