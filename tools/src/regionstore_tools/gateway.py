"""The gateway's HTTP API as the command line uses it: typed answers, one-line errors.

Every failure becomes a ``ToolError`` whose message fits on one line: what went wrong, and for a
401 or 403 which role the request needs.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

Role = Literal["reader", "writer", "operator"]
KEY_SOURCES = "REGIONSTORE_API_KEY, REGIONSTORE_API_KEY_FILE or $RUN_DIR/operator.key"


class ToolError(Exception):
    """A failure to report on one line of stderr, with the exit status to end with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_AnswerT = TypeVar("_AnswerT", bound=_Answer)


class StatusChange(_Answer):
    """One entry of a region's audit trail."""

    at: str
    key_id: str
    status: str
    by: str = "operator"
    reason: str | None = None


class Region(_Answer):
    """A region as ``GET /v1/regions`` describes it."""

    name: str
    status: str
    set_by: str | None = None
    """``operator`` or ``detector``; None when nobody set the status yet."""
    set_by_key: str | None = None
    since: datetime | None = None
    reason: str | None = None
    zip_min: int
    zip_max: int
    replicas: list[str]
    pending: int | None
    applied: int | None = None
    recent_changes: list[StatusChange] = []


class RegionList(_Answer):
    """Every region, and the consumers' lag."""

    regions: list[Region]
    lag: dict[str, int | None] = {}


class Customer(_Answer):
    """A customer as read back, with where it came from."""

    customer_id: str
    customer_unique_id: str
    customer_zip_code_prefix: int
    customer_city: str
    customer_state: str
    region: str
    served_by: str
    fallback: bool
    version: int


class CustomerPage(_Answer):
    """One page of a list query."""

    items: list[Customer]
    next_cursor: str | None = None
    order: list[str] = []
    degraded_regions: list[str] = []
    unreachable_regions: list[str] = []
    incomplete: bool = False


class Gateway:
    """A synchronous client of one gateway, sending the API key as a Bearer token."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout_s: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.has_key = api_key is not None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._http.close()

    def regions(self) -> dict[str, Any]:
        """The raw region list."""
        return self._call("GET", "/v1/regions", "reader")

    def set_status(self, region: str, status: str) -> dict[str, Any]:
        """Mark a region available or unavailable; the region as it is now."""
        path = f"/v1/regions/{quote(region, safe='')}/status"
        return self._call("PUT", path, "operator", json={"status": status})

    def customer(self, customer_id: str) -> dict[str, Any]:
        """One customer, raw."""
        return self._call("GET", f"/v1/customers/{quote(customer_id, safe='')}", "reader")

    def export(self, text: str, *, person: bool) -> dict[str, Any]:
        """Everything held about a customer id, or about a person (``person``: a unique id)."""
        if person:
            path = f"/v1/customers:export?customer_unique_id={quote(text, safe='')}"
        else:
            path = f"/v1/customers/{quote(text, safe='')}/export"
        return self._call("GET", path, "operator")

    def customer_or_none(self, customer_id: str) -> dict[str, Any] | None:
        """One customer, raw; None when there is none with this id (404)."""
        path = f"/v1/customers/{quote(customer_id, safe='')}"
        response = self._send("GET", path)
        if response.status_code == 404:
            return None
        return self._answer(response, "GET", path, "reader")

    def customers(self, params: dict[str, str | int]) -> dict[str, Any]:
        """One page of a list query, raw."""
        return self._call("GET", "/v1/customers", "reader", params=params)

    def _call(self, method: str, path: str, role: Role, **kwargs: Any) -> dict[str, Any]:
        return self._answer(self._send(method, path, **kwargs), method, path, role)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise ToolError(
                f"the gateway at {self.url} did not answer in time ({method} {path}): "
                f"{_describe(error)}"
            ) from error
        except httpx.HTTPError as error:
            raise ToolError(
                f"cannot reach the gateway at {self.url}: {_describe(error)}"
            ) from error

    def _answer(
        self, response: httpx.Response, method: str, path: str, role: Role
    ) -> dict[str, Any]:
        if response.is_success:
            try:
                body = response.json()
            except ValueError as error:
                raise ToolError(f"{method} {path}: the gateway answered no JSON") from error
            if not isinstance(body, dict):
                raise ToolError(f"{method} {path}: the gateway answered {type(body).__name__}")
            return body
        raise ToolError(self._refusal(response, role))

    def _refusal(self, response: httpx.Response, role: Role) -> str:
        code = response.status_code
        detail = describe_detail(response)
        if code == 401:
            if self.has_key:
                return f"the gateway refused the API key (401): this needs a valid {role} key"
            return f"the gateway needs an API key (401): a {role} key, from {KEY_SOURCES}"
        if code == 403:
            return f"the API key's role may not do this (403): it needs the {role} role"
        if code == 429:
            wait = response.headers.get("Retry-After")
            return f"too many requests (429){f': retry after {wait} s' if wait else ''}"
        return f"{detail} (HTTP {code})" if detail else f"the gateway answered HTTP {code}"


def parse(model: type[_AnswerT], body: dict[str, Any]) -> _AnswerT:
    """An answer as a model; a ToolError when the gateway's shape is not the expected one."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ToolError(f"unexpected answer from the gateway: {where}: {first['msg']}") from error


def describe_detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer as one line: '<field>: <reason>; ...' for a 422."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:200].strip()
    if isinstance(detail, list):
        return "; ".join(_field_error(item) for item in detail if isinstance(item, dict))
    return str(detail) if detail is not None else ""


def _field_error(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    where = ".".join(loc[1:] if loc[:1] in (["query"], ["body"], ["path"]) else loc)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where or 'request'}: {message}"


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
