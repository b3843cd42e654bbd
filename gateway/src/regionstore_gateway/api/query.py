"""Query strings: every parameter of this API takes one value."""

from __future__ import annotations

from fastapi import Request

from regionstore_gateway.services.errors import InvalidInput


async def each_parameter_once(request: Request) -> None:
    """A 422 for a query parameter given twice: FastAPI would keep the last value silently, so
    ``state=XX&state=`` would read every state, an answer to a question nobody asked."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise InvalidInput.field(
                ("query", name), "given more than once: it takes one value", "repeated_parameter"
            )
        seen.add(name)
