"""The customer list and form: create, find, validate, edit, delete, page, and render safely."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Request, expect

from tests.browser.console_pages import (
    Console,
    CustomerFactory,
    api_field_error,
    customer_dialog,
    customer_row,
    fill_customer_form,
    filter_customers,
    open_new_customer,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

FIELDS = (
    "customer_id",
    "customer_unique_id",
    "customer_zip_code_prefix",
    "customer_city",
    "customer_state",
)


def is_write(method: str) -> Callable[[Request], bool]:
    """A request predicate for a customer write with the given method."""

    def matches(request: Request) -> bool:
        return request.method == method and "/v1/customers" in request.url

    return matches


class TestCreate:
    def test_created_customer_is_found_with_the_filters(
        self, console: Console, api: httpx.Client, customers: CustomerFactory
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        data = customers.body(
            customer_zip_code_prefix=13560,
            customer_state="SP",
            customer_city=f"São Carlos Teste {suffix}",
        )
        page = console.open()
        dialog = open_new_customer(page)
        fill_customer_form(dialog, data)
        expect(dialog.get_by_test_id("zip-home-hint")).to_contain_text("Home region_1")
        console.shot(page, "form")

        with page.expect_request(is_write("POST")) as sent:
            dialog.get_by_role("button", name="Create").click()
        expect(dialog).to_be_hidden()
        request = sent.value
        assert "wait=applied" in request.url
        assert request.headers.get("if-none-match") == "*"
        assert request.post_data_json == data
        expect(page.get_by_test_id("toast").last).to_contain_text(data["customer_id"])

        # City matches by prefix, ignoring case and accents.
        filter_customers(
            page,
            zip_min="13000",
            zip_max="13999",
            state="SP",
            region="region_1",
            city=f"sao carlos teste {suffix[:6]}",
        )
        expect(page.get_by_test_id("customer-row")).to_have_count(1)
        row = customer_row(page, data["customer_id"])
        expect(row.get_by_test_id("cell-id")).to_have_text(data["customer_id"])
        expect(row.get_by_test_id("cell-unique-id")).to_have_text(data["customer_unique_id"])
        expect(row.get_by_test_id("cell-zip")).to_have_text("13560")
        expect(row.get_by_test_id("cell-city")).to_have_text(data["customer_city"])
        expect(row.get_by_test_id("cell-state")).to_have_text("SP")
        expect(row.get_by_test_id("cell-region")).to_have_text("region_1")
        expect(row.get_by_test_id("served-by")).to_have_attribute("data-fallback", "false")
        console.shot(page, "found")

        filter_customers(page, city=f"sao carlos teste {suffix}", state="RJ")
        expect(page.get_by_test_id("customer-row")).to_have_count(0)
        expect(page.get_by_test_id("customers-empty")).to_be_visible()

        stored = api.get(f"/v1/customers/{data['customer_id']}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["customer_city"] == data["customer_city"]

    def test_existing_id_is_refused(
        self, console: Console, api: httpx.Client, customers: CustomerFactory
    ) -> None:
        existing = customers.create()
        page = console.open()
        dialog = open_new_customer(page)
        fill_customer_form(dialog, {**customers.body(), "customer_id": existing["customer_id"]})

        dialog.get_by_role("button", name="Create").click()

        message = dialog.get_by_test_id("form-message")
        expect(message).to_be_visible()
        expect(message).to_contain_text("already exists")
        expect(dialog).to_be_visible()
        console.shot(page, "conflict")
        stored = api.get(f"/v1/customers/{existing['customer_id']}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["customer_city"] == existing["customer_city"]


class TestValidation:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("customer_zip_code_prefix", 500), ("customer_unique_id", "xyz")],
        ids=["zip-500", "unique-id-xyz"],
    )
    def test_api_error_is_shown_next_to_its_field(
        self,
        console: Console,
        api: httpx.Client,
        customers: CustomerFactory,
        field: str,
        value: object,
    ) -> None:
        data = {**customers.body(), field: value}
        said = api_field_error(api, data, field)
        page = console.open()
        dialog = open_new_customer(page)
        fill_customer_form(dialog, data)

        dialog.get_by_role("button", name="Create").click()

        expect(dialog.get_by_test_id(f"error-{field}")).to_have_text(said)
        expect(dialog.get_by_test_id(f"field-{field}")).to_have_attribute("aria-invalid", "true")
        for other in FIELDS:
            if other != field:
                expect(dialog.get_by_test_id(f"error-{other}")).to_be_empty()
        expect(dialog).to_be_visible()
        console.shot(page, "error")
        assert api.get(f"/v1/customers/{data['customer_id']}").status_code == 404

        # Typing in the field withdraws the complaint until the API is asked again.
        dialog.get_by_test_id(f"field-{field}").fill("")
        expect(dialog.get_by_test_id(f"error-{field}")).to_be_empty()


class TestEditAndDelete:
    def test_edit_patches_changed_fields_and_delete_asks_first(
        self, console: Console, api: httpx.Client, customers: CustomerFactory
    ) -> None:
        city = f"Teste Edicao {uuid.uuid4().hex[:8]}"
        made = customers.create(
            customer_zip_code_prefix=70040, customer_state="DF", customer_city=city
        )
        customer_id = made["customer_id"]
        page = console.open()
        filter_customers(page, city=city)
        row = customer_row(page, customer_id)

        row.get_by_role("button", name=f"Edit {customer_id}").click()
        dialog = customer_dialog(page)
        expect(dialog.get_by_role("heading", name="Edit customer")).to_be_visible()
        expect(dialog.get_by_label("Customer id")).to_have_value(customer_id)
        expect(dialog.get_by_label("Customer id")).not_to_be_editable()
        expect(dialog.get_by_label("City")).to_have_value(city)
        expect(dialog.get_by_label("State")).to_have_value("DF")
        expect(dialog.get_by_test_id("customer-meta")).to_contain_text("version")

        dialog.get_by_role("button", name="Save changes").click()
        expect(dialog.get_by_test_id("form-message")).to_have_text("Nothing changed.")

        new_city = f"{city} Novo"
        dialog.get_by_label("City").fill(new_city)
        console.shot(page, "edit")
        with page.expect_request(is_write("PATCH")) as sent:
            dialog.get_by_role("button", name="Save changes").click()
        expect(dialog).to_be_hidden()
        assert "wait=applied" in sent.value.url
        assert sent.value.post_data_json == {"customer_city": new_city}
        expect(row.get_by_test_id("cell-city")).to_have_text(new_city)
        stored = api.get(f"/v1/customers/{customer_id}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["customer_city"] == new_city

        confirm = page.get_by_test_id("confirm-dialog")
        row.get_by_role("button", name=f"Delete {customer_id}").click()
        expect(confirm).to_be_visible()
        expect(confirm.get_by_test_id("confirm-text")).to_contain_text(customer_id)
        console.shot(page, "confirm")
        confirm.get_by_role("button", name="Keep").click()
        expect(confirm).to_be_hidden()
        expect(row).to_be_visible()
        assert api.get(f"/v1/customers/{customer_id}").status_code == 200

        # Delete from inside the edit dialog this time.
        row.get_by_role("button", name=f"Edit {customer_id}").click()
        dialog.get_by_role("button", name="Delete…").click()
        with page.expect_request(is_write("DELETE")) as sent:
            confirm.get_by_role("button", name="Delete", exact=True).click()
        assert "wait=applied" in sent.value.url
        expect(confirm).to_be_hidden()
        expect(dialog).to_be_hidden()
        expect(row).to_have_count(0)
        expect(page.get_by_test_id("customers-empty")).to_be_visible()
        assert api.get(f"/v1/customers/{customer_id}").status_code == 404


class TestList:
    def test_next_and_previous_follow_the_cursors(
        self, console: Console, customers: CustomerFactory
    ) -> None:
        city = f"Teste Paginas {uuid.uuid4().hex[:8]}"
        ids = sorted(customers.create(customer_city=city)["customer_id"] for _ in range(12))
        page = console.open()
        cells = page.get_by_test_id("cell-id")
        previous = page.get_by_role("button", name="Previous")
        following = page.get_by_role("button", name="Next")

        filter_customers(page, city=city, limit="10")
        expect(cells).to_have_text(ids[:10])
        expect(previous).to_be_disabled()
        expect(page.get_by_test_id("page-label")).to_contain_text("Page 1")

        following.click()
        expect(cells).to_have_text(ids[10:])
        expect(following).to_be_disabled()
        expect(page.get_by_test_id("page-label")).to_contain_text("Page 2")
        console.shot(page, "page-2")

        previous.click()
        expect(cells).to_have_text(ids[:10])
        expect(previous).to_be_disabled()

    def test_query_error_is_shown_next_to_its_filter(
        self, console: Console, api: httpx.Client
    ) -> None:
        response = api.get("/v1/customers", params={"zip_min": 5000, "zip_max": 10})
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "zip_max"]
        page = console.open()

        filter_customers(page, zip_min="5000", zip_max="10")

        expect(page.get_by_test_id("filter-error-zip_max")).to_have_text(
            error["msg"].removeprefix("Value error, ")
        )
        expect(page.get_by_test_id("filter-zip_max")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_test_id("banner-error")).to_be_hidden()
        expect(page.get_by_test_id("customer-row")).to_have_count(0)
        expect(page.get_by_test_id("customers-empty")).to_contain_text("Fix the filters")
        console.shot(page, "filter-error")

        filter_customers(page, zip_min="5000", zip_max="6000")
        expect(page.get_by_test_id("filter-error-zip_max")).to_be_empty()
        expect(page.get_by_test_id("filter-zip_max")).not_to_have_attribute("aria-invalid", "true")

    def test_user_text_is_shown_as_text(self, console: Console, customers: CustomerFactory) -> None:
        city = f'<img src=x onerror="window.__pwned=1">{uuid.uuid4().hex[:8]}'
        made = customers.create(customer_city=city)
        page = console.open()

        filter_customers(page, city=city)

        row = customer_row(page, made["customer_id"])
        expect(row.get_by_test_id("cell-city")).to_have_text(city)
        expect(row.locator("img")).to_have_count(0)
        assert page.evaluate("window.__pwned") is None


class TestListPlace:
    def test_the_filters_and_the_page_survive_a_reload_and_a_shared_link(
        self, console: Console, customers: CustomerFactory
    ) -> None:
        city = f"Teste Endereco {uuid.uuid4().hex[:8]}"
        ids = sorted(customers.create(customer_city=city)["customer_id"] for _ in range(12))
        page = console.open()
        cells = page.get_by_test_id("cell-id")
        label = page.get_by_test_id("page-label")
        filter_customers(page, city=city, limit="10")
        page.get_by_role("button", name="Next").click()
        expect(cells).to_have_text(ids[10:])
        assert "cursor=" in page.url
        assert f"city={city.replace(' ', '+')}" in page.url

        page.reload()
        expect(cells).to_have_text(ids[10:])
        expect(label).to_contain_text("Page 2")
        expect(page.get_by_test_id("filter-city")).to_have_value(city)
        expect(page.get_by_test_id("filter-limit")).to_have_value("10")
        page.get_by_role("button", name="Previous").click()
        expect(cells).to_have_text(ids[:10])
        page.go_back()
        expect(cells).to_have_text(ids[10:])

        shared = console.open()
        shared.goto(page.url)
        expect(shared.get_by_test_id("cell-id")).to_have_text(ids[10:])
        expect(shared.get_by_test_id("page-label")).to_contain_text("Page 2")
        # The pages before a shared one were never read in this tab: Previous starts over.
        shared.get_by_role("button", name="Previous").click()
        expect(shared.get_by_test_id("cell-id")).to_have_text(ids[:10])
        expect(shared.get_by_test_id("page-label")).to_contain_text("Page 1")

    def test_a_customer_is_found_by_its_id_and_a_person_by_their_unique_id(
        self, console: Console, customers: CustomerFactory
    ) -> None:
        person = uuid.uuid4().hex
        first = customers.create(customer_unique_id=person, customer_zip_code_prefix=13560)
        second = customers.create(customer_unique_id=person, customer_zip_code_prefix=70040,
                                  customer_state="DF")  # fmt: skip
        other = customers.create()
        page = console.open()
        find = page.get_by_test_id("find-text")

        find.fill(person.upper())
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_test_id("cell-id")).to_have_text(
            sorted([first["customer_id"], second["customer_id"]])
        )
        expect(page.get_by_test_id("page-label")).to_have_text("Found 2 customers")
        assert "find=" in page.url
        console.shot(page, "found-person")

        find.fill(other["customer_id"])
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_test_id("cell-id")).to_have_text([other["customer_id"]])
        page.reload()
        expect(page.get_by_test_id("cell-id")).to_have_text([other["customer_id"]])
        expect(find).to_have_value(other["customer_id"])

        find.fill(uuid.uuid4().hex)
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_test_id("customers-empty")).to_contain_text("No customer has")
        page.get_by_role("button", name="Back to the list").click()
        expect(page.get_by_test_id("page-label")).to_contain_text("Page 1")
        assert "find=" not in page.url
