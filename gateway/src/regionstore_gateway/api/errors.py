"""Errors answered in FastAPI's validation shape, so every 4xx names the field and the reason."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.exceptions import RequestValidationError


def field_error(
    loc: Sequence[str | int], message: str, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 for one field."""
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": kind}])
