"""The gateway commands against an in-memory gateway (httpx.MockTransport: no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from regionstore_tools.cli import app

runner = CliRunner()
Handler = Callable[[httpx.Request], httpx.Response]


def region(name: str, status: str = "available", pending: int | None = 0) -> dict[str, Any]:
    zips = {"region_1": (1000, 39999), "region_2": (40000, 69999), "region_3": (70000, 99999)}
    low, high = zips[name]
    return {
        "name": name,
        "status": status,
        "zip_min": low,
        "zip_max": high,
        "replicas": ["region_2" if name == "region_1" else "region_1"],
        "pending": pending,
    }


def region_list(pending: dict[str, int | None] | None = None) -> dict[str, Any]:
    pending = pending or {}
    return {
        "regions": [
            region(name, pending=pending.get(name, 0)) for name in ("region_1", "region_2")
        ],
        "lag": {"writer": 3, "replicator": None},
    }


CUSTOMER: dict[str, Any] = {
    "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 1310,
    "customer_city": "sao paulo",
    "customer_state": "SP",
    "region": "region_1",
    "served_by": "region_2",
    "fallback": True,
    "version": 7,
}


class Gateway:
    """Records requests and answers them with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key from the machine running the tests: an empty run dir, no key variables."""
    monkeypatch.delenv("REGIONSTORE_API_KEY", raising=False)
    monkeypatch.delenv("REGIONSTORE_API_KEY_FILE", raising=False)
    monkeypatch.setenv("RUN_DIR", str(tmp_path))


def invoke(handler: Handler, *args: str) -> tuple[Result, Gateway]:
    gateway = Gateway(handler)
    result = runner.invoke(
        app, [*args, "--url", "http://gw"], obj=httpx.MockTransport(gateway), env={"COLUMNS": "200"}
    )
    return result, gateway


def answer(body: Any, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    return result.stderr.removeprefix("error: ").strip()


class TestStatus:
    def test_table_of_regions_and_lag(self) -> None:
        result, _ = invoke(answer(region_list({"region_2": 1234})), "status")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        row = next(line for line in lines if "region_2" in line and "40000-69999" in line)
        assert "available" in row
        assert "1,234" in row
        assert "Consumer lag: writer 3, replicator ?" in result.stdout

    def test_says_who_set_each_status_and_since_when(self) -> None:
        body = region_list()
        body["regions"][0] |= {
            "set_by": "operator",
            "set_by_key": "2ef1b2d81055",
            "since": "2026-12-06T12:01:02.345000Z",
        }
        body["regions"][1] |= {
            "status": "down",
            "set_by": "detector",
            "since": "2026-12-06T12:57:31Z",
            "reason": "3 failures within 10 s (probe 3)",
        }
        result, _ = invoke(answer(body), "status")
        assert result.exit_code == 0, result.output
        rows = {line.split()[1]: line for line in result.stdout.splitlines() if "-" in line}
        assert "operator 2ef1b2d81055" in result.stdout
        assert "2026-12-06 12:01:02 UTC" in rows["region_1"]
        assert "detector" in rows["region_2"]
        assert "down" in rows["region_2"]
        assert "region_2 down (detector): 3 failures within 10 s (probe 3)" in result.stdout

    def test_json_is_the_gateway_answer(self) -> None:
        body = region_list()
        result, gateway = invoke(answer(body), "status", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == body
        assert [r.url.path for r in gateway.requests] == ["/v1/regions"]

    def test_unreachable_gateway_is_one_line(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        result, _ = invoke(refuse, "status")
        assert one_line_error(result) == (
            "cannot reach the gateway at http://gw: ConnectError: refused"
        )

    def test_an_answer_of_another_shape_is_one_line(self) -> None:
        result, _ = invoke(answer({"regions": [{"name": "x"}]}), "status")
        assert one_line_error(result).startswith("unexpected answer from the gateway: regions.0.")


class TestRegion:
    @pytest.mark.parametrize(("verb", "status"), [("down", "unavailable"), ("up", "available")])
    def test_puts_the_status(self, verb: str, status: str) -> None:
        result, gateway = invoke(answer(region("region_2", status, 5)), "region", verb, "region_2")
        assert result.exit_code == 0, result.output
        (request,) = gateway.requests
        assert (request.method, request.url.path) == ("PUT", "/v1/regions/region_2/status")
        assert json.loads(request.content) == {"status": status}
        assert result.stdout.strip() == f"region_2 is now {status} (pending 5)"

    def test_unknown_region(self) -> None:
        result, _ = invoke(answer({"detail": "unknown region 'nowhere'"}, 404), "region", "up", "x")
        assert one_line_error(result) == "unknown region 'nowhere' (HTTP 404)"

    def test_a_reader_key_is_told_the_role_needed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_API_KEY", "rsk_0123456789ab_reader")
        result, _ = invoke(answer({"detail": "forbidden"}, 403), "region", "down", "region_1")
        assert one_line_error(result) == (
            "the API key's role may not do this (403): it needs the operator role"
        )


class TestGet:
    def test_fields_and_where_it_was_read(self) -> None:
        result, gateway = invoke(answer(CUSTOMER), "get", CUSTOMER["customer_id"])
        assert result.exit_code == 0, result.output
        assert gateway.requests[0].url.path == f"/v1/customers/{CUSTOMER['customer_id']}"
        assert "01310" in result.stdout
        assert "region_2 (replica: home unavailable)" in result.stdout

    def test_unknown_id_is_one_line(self) -> None:
        result, _ = invoke(answer({"detail": "customer nope not found"}, 404), "get", "nope")
        assert one_line_error(result) == "customer nope not found (HTTP 404)"

    def test_the_id_cannot_leave_the_customers_path(self) -> None:
        result, gateway = invoke(answer({"detail": "x"}, 404), "get", "../regions")
        assert result.exit_code == 1
        assert gateway.requests[0].url.raw_path == b"/v1/customers/..%2Fregions"

    def test_without_a_key_401_names_the_role_and_where_keys_come_from(self) -> None:
        result, gateway = invoke(answer({"detail": "missing API key"}, 401), "get", "x")
        assert "Authorization" not in gateway.requests[0].headers
        assert one_line_error(result) == (
            "the gateway needs an API key (401): a reader key, from REGIONSTORE_API_KEY, "
            "REGIONSTORE_API_KEY_FILE or $RUN_DIR/operator.key"
        )


class TestList:
    def test_filters_become_query_parameters(self) -> None:
        page = {"items": [CUSTOMER], "next_cursor": None}
        result, gateway = invoke(
            answer(page),
            "list", "--region", "region_1", "--zip", "1310", "--city", "São", "--state", "sp",
            "--unique-id", "AB", "--limit", "5", "--cursor", "abc",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert dict(gateway.requests[0].url.params) == {
            "region": "region_1",
            "zip_min": "1310",
            "zip_max": "1310",
            "city": "São",
            "state": "sp",
            "unique_id": "AB",
            "limit": "5",
            "cursor": "abc",
        }
        assert CUSTOMER["customer_id"] in result.stdout
        assert "1 customer(s)" in result.stdout

    def test_degraded_incomplete_and_more(self) -> None:
        page = {
            "items": [CUSTOMER],
            "next_cursor": "eyJhZnRlciI6IngifQ",
            "degraded_regions": ["region_1"],
            "unreachable_regions": ["region_3"],
            "incomplete": True,
        }
        result, _ = invoke(answer(page), "list")
        assert result.exit_code == 0, result.output
        assert "degraded: region_1 read from a replica" in result.stdout
        assert "incomplete: region_3 could not be read" in result.stdout
        assert "more: --cursor eyJhZnRlciI6IngifQ" in result.stdout

    def test_json_is_the_page(self) -> None:
        page: dict[str, Any] = {"items": [], "next_cursor": None, "incomplete": False}
        result, _ = invoke(answer(page), "list", "--json")
        assert json.loads(result.stdout) == page

    def test_a_422_names_the_parameter(self) -> None:
        detail = [{"loc": ["query", "state"], "msg": "must be one of AC, AL", "type": "x"}]
        result, _ = invoke(answer({"detail": detail}, 422), "list", "--state", "XX")
        assert one_line_error(result) == "state: must be one of AC, AL (HTTP 422)"

    def test_zip_out_of_range_is_refused_before_any_request(self) -> None:
        result, gateway = invoke(answer({}), "list", "--zip-min", "100000")
        assert result.exit_code == 2
        assert gateway.requests == []

    def test_the_order_of_the_page_is_said(self) -> None:
        page = {"items": [CUSTOMER], "next_cursor": None, "order": ["customer_city", "customer_id"]}
        result, _ = invoke(answer(page), "list", "--city", "sao")
        assert "sorted by customer_city, then customer_id" in result.stdout


def find_handler(person: list[dict[str, Any]], known: set[str]) -> Handler:
    """A gateway where ``known`` ids can be read and ``person`` are one person's customers."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/customers":
            return httpx.Response(200, json={"items": person, "next_cursor": None})
        customer_id = request.url.path.rsplit("/", 1)[-1]
        if customer_id in known:
            return httpx.Response(200, json={**CUSTOMER, "customer_id": customer_id})
        return httpx.Response(404, json={"detail": f"customer {customer_id} not found"})

    return handle


class TestFind:
    def test_a_32_hex_text_is_looked_up_as_an_id_and_as_a_unique_id(self) -> None:
        person = [{**CUSTOMER, "customer_id": "a" * 32}, {**CUSTOMER, "customer_id": "b" * 32}]
        result, gateway = invoke(
            find_handler(person, set()), "find", "861EFF4711A542E4B93843C6DD7FEBB0"
        )
        assert result.exit_code == 0, result.output
        assert [r.url.path for r in gateway.requests] == [
            "/v1/customers/861EFF4711A542E4B93843C6DD7FEBB0",
            "/v1/customers",
        ]
        assert gateway.requests[1].url.params["unique_id"] == "861EFF4711A542E4B93843C6DD7FEBB0"
        assert "a" * 32 in result.stdout
        assert "2 customer(s)" in result.stdout

    def test_an_id_that_is_not_a_unique_id_is_looked_up_alone(self) -> None:
        result, gateway = invoke(find_handler([], {"c-1"}), "find", "c-1", "--json")
        assert [c["customer_id"] for c in json.loads(result.stdout)["items"]] == ["c-1"]
        assert len(gateway.requests) == 1

    def test_nothing_found_is_an_empty_answer(self) -> None:
        result, _ = invoke(find_handler([], set()), "find", "c-2")
        assert result.exit_code == 0, result.output
        assert "0 customer(s)" in result.stdout


class TestKeys:
    @staticmethod
    def sent_key(*args: str) -> str | None:
        result, gateway = invoke(answer(region_list()), "status", *args)
        assert result.exit_code == 0, result.output
        sent: str | None = gateway.requests[0].headers.get("Authorization")
        return sent

    def test_the_variable_first(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        (tmp_path / "operator.key").write_text("rsk_aaaaaaaaaaaa_run\n")
        monkeypatch.setenv("REGIONSTORE_API_KEY", "rsk_aaaaaaaaaaaa_env")
        assert self.sent_key() == "Bearer rsk_aaaaaaaaaaaa_env"

    def test_then_the_key_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        (tmp_path / "operator.key").write_text("rsk_aaaaaaaaaaaa_run\n")
        (tmp_path / "mine.key").write_text("rsk_aaaaaaaaaaaa_file\n")
        monkeypatch.setenv("REGIONSTORE_API_KEY_FILE", str(tmp_path / "mine.key"))
        assert self.sent_key() == "Bearer rsk_aaaaaaaaaaaa_file"

    def test_then_the_run_dirs_operator_key(self, tmp_path: Path) -> None:
        (tmp_path / "operator.key").write_text("rsk_aaaaaaaaaaaa_run\n")
        assert self.sent_key() == "Bearer rsk_aaaaaaaaaaaa_run"

    def test_none_at_all(self) -> None:
        assert self.sent_key() is None

    def test_a_missing_key_file_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("REGIONSTORE_API_KEY_FILE", str(tmp_path / "gone.key"))
        result, gateway = invoke(answer(region_list()), "status")
        assert one_line_error(result) == (
            f"cannot read the API key file {tmp_path / 'gone.key'} (REGIONSTORE_API_KEY_FILE): "
            "No such file or directory"
        )
        assert gateway.requests == []


class TestDrain:
    @staticmethod
    def readings(*pending: int | None) -> Handler:
        queue: Iterator[int | None] = iter(pending)
        last: list[int | None] = [None]

        def handler(request: httpx.Request) -> httpx.Response:
            last[0] = next(queue, last[0])
            return httpx.Response(200, json=region_list({"region_2": last[0]}))

        return handler

    def test_watch_ends_when_every_backlog_is_empty(self) -> None:
        result, gateway = invoke(
            self.readings(40, 25, None, 5, 0), "drain", "--watch", "--every", "0.1"
        )
        assert result.exit_code == 0, result.output
        assert len(gateway.requests) == 5
        assert "replayed: region_2 40" in result.stdout

    def test_nothing_pending(self) -> None:
        result, _ = invoke(self.readings(0), "drain", "--watch", "--every", "0.1")
        assert result.exit_code == 0, result.output
        assert "nothing was pending" in result.stdout

    def test_timeout_says_what_is_left(self) -> None:
        result, _ = invoke(self.readings(7), "drain", "--watch", "--every", "0.1", "--timeout", "0")
        assert result.exit_code == 1
        assert result.stderr == "error: still pending after 0 s: region_2 7\n"

    def test_without_watch_one_reading(self) -> None:
        result, gateway = invoke(self.readings(3), "drain")
        assert result.exit_code == 0, result.output
        assert len(gateway.requests) == 1
        assert "region_2     available    pending 3" in result.stdout
