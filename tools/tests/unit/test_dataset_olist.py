"""The Olist-style generator: reproducible, valid, and shaped like the real data set."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import pytest

from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.schemas import UF_CODES, Customer, fold_text
from regionstore_tools.dataset.olist import (
    REPEAT_CUSTOMER_RATE,
    STATE_BY_CODE,
    STATES,
    City,
    State,
    generate,
    state_of_zip,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
SAMPLE = 20_000


@pytest.fixture(scope="module")
def sample() -> list[Customer]:
    return list(generate(SAMPLE, seed=2016))


def city_of(customer: Customer) -> City:
    state = STATE_BY_CODE[customer.customer_state]
    folded = fold_text(customer.customer_city)
    return next(city for city in state.cities if city.olist_name == folded)


def within(zip_prefix: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= zip_prefix <= high for low, high in ranges)


class TestStates:
    def test_every_uf_once(self) -> None:
        assert sorted(state.code for state in STATES) == sorted(UF_CODES)

    def test_state_ranges_do_not_overlap(self) -> None:
        ranges = sorted((r, s.code) for s in STATES for r in s.zips)
        for (low, first), (high, second) in itertools.pairwise(ranges):
            assert low[1] < high[0], f"{first} {low} overlaps {second} {high}"

    def test_ranges_are_homed_prefixes(self) -> None:
        regions = RegionMap(DEFAULT_REGIONS)
        for state in STATES:
            for low, high in state.zips:
                assert 1000 <= low <= high <= 99999
                regions.home_of(low)
                regions.home_of(high)

    @pytest.mark.parametrize(
        ("code", "zip_prefix"),
        [("SP", 1000), ("SP", 19999), ("RJ", 20000), ("DF", 70000), ("DF", 73000),
         ("GO", 72800), ("GO", 73700), ("RO", 76800), ("AM", 69400), ("RR", 69300),
         ("RS", 99999)],
    )  # fmt: skip
    def test_real_cep_boundaries(self, code: str, zip_prefix: int) -> None:
        assert state_of_zip(zip_prefix) == code

    @pytest.mark.parametrize("zip_prefix", [0, 999, 78900, 100000])
    def test_no_state_outside_the_table(self, zip_prefix: int) -> None:
        assert state_of_zip(zip_prefix) is None

    @pytest.mark.parametrize("state", STATES, ids=lambda s: s.code)
    def test_city_ranges_lie_inside_their_state_and_apart(self, state: State) -> None:
        owned = sorted(r for city in state.cities for r in city.zips)
        for low, high in owned:
            assert low <= high
            assert within(low, state.zips)
            assert within(high, state.zips)
        for first, second in itertools.pairwise(owned):
            assert first[1] < second[0]

    @pytest.mark.parametrize("state", STATES, ids=lambda s: s.code)
    def test_cities_without_ranges_have_somewhere_to_live(self, state: State) -> None:
        if any(not city.zips for city in state.cities):
            assert state.rest
        names = [city.olist_name for city in state.cities]
        assert len(set(names)) == len(names)
        assert all(name.isascii() and name == name.lower() for name in names)


class TestGenerate:
    def test_same_seed_same_customers(self) -> None:
        assert list(generate(200, seed=7)) == list(generate(200, seed=7))

    def test_other_seed_other_customers(self) -> None:
        assert list(generate(50, seed=7)) != list(generate(50, seed=8))

    def test_a_longer_run_extends_a_shorter_one(self) -> None:
        assert list(generate(30, seed=3)) == list(generate(100, seed=3))[:30]

    def test_zero_and_negative(self) -> None:
        assert list(generate(0)) == []
        with pytest.raises(ValueError, match="n must be >= 0"):
            list(generate(-1))

    def test_every_record_validates(self, sample: list[Customer]) -> None:
        for customer in sample:
            assert Customer.model_validate(customer.model_dump()) == customer

    def test_ids_are_32_lowercase_hex(self, sample: list[Customer]) -> None:
        for customer in sample:
            assert HEX32.match(customer.customer_id)
            assert HEX32.match(customer.customer_unique_id)
        assert len({c.customer_id for c in sample}) == SAMPLE

    def test_zip_is_homed_and_agrees_with_state(self, sample: list[Customer]) -> None:
        regions = RegionMap(DEFAULT_REGIONS)
        for customer in sample:
            zip_prefix = customer.customer_zip_code_prefix
            assert 1000 <= zip_prefix <= 99999
            regions.home_of(zip_prefix)
            assert state_of_zip(zip_prefix) == customer.customer_state

    def test_city_belongs_to_state_and_zip_to_city(self, sample: list[Customer]) -> None:
        for customer in sample:
            state = STATE_BY_CODE[customer.customer_state]
            city = city_of(customer)
            assert within(customer.customer_zip_code_prefix, city.zips or state.rest)

    def test_all_three_regions_get_customers(self, sample: list[Customer]) -> None:
        regions = RegionMap(DEFAULT_REGIONS)
        homes = Counter(regions.home_of(c.customer_zip_code_prefix) for c in sample)
        assert set(homes) == set(regions.names)

    def test_state_distribution_follows_olist(self, sample: list[Customer]) -> None:
        counts = Counter(c.customer_state for c in sample)
        total_share = sum(state.share for state in STATES)
        for state in STATES:
            expected = state.share / total_share
            sigma = math.sqrt(expected * (1 - expected) / SAMPLE)
            observed = counts[state.code] / SAMPLE
            assert abs(observed - expected) <= 4 * sigma + 0.001, state.code
        assert 0.40 <= counts["SP"] / SAMPLE <= 0.44

    def test_mostly_olist_spelling_with_some_variants(self, sample: list[Customer]) -> None:
        olist_form = sum(c.customer_city == fold_text(c.customer_city) for c in sample)
        accented = {c.customer_city for c in sample if not c.customer_city.isascii()}
        upper = {c.customer_city for c in sample if c.customer_city.isupper()}
        assert 0.85 <= olist_form / SAMPLE <= 0.95
        assert "São Paulo" in accented
        assert "SAO PAULO" in upper
        assert len(accented) > 20

    def test_some_people_come_back(self, sample: list[Customer]) -> None:
        people = Counter(c.customer_unique_id for c in sample)
        returning = SAMPLE - len(people)
        assert returning / SAMPLE == pytest.approx(REPEAT_CUSTOMER_RATE, abs=0.01)
        by_person: dict[str, set[tuple[int, str, str]]] = {}
        for c in sample:
            address = (c.customer_zip_code_prefix, c.customer_city, c.customer_state)
            by_person.setdefault(c.customer_unique_id, set()).add(address)
        assert all(len(addresses) == 1 for addresses in by_person.values())
