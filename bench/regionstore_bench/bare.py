"""A bare FastAPI endpoint with the gateway's body validation, to measure the gateway against."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, status

from regionstore_shared.schemas import Customer
from regionstore_testing.ports import free_port
from regionstore_testing.processes import stop, wait_serving


def create_app() -> FastAPI:
    """One POST /v1/customers that validates like the gateway and answers 202, nothing else."""
    app = FastAPI()

    @app.post("/v1/customers", status_code=status.HTTP_202_ACCEPTED)
    async def post_customer(customer: Customer) -> dict[str, str]:
        key = customer.customer_id
        return {"customer_id": key, "location": f"/v1/customers/{key}"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def ratio_to_bare(gateway_rate: float, bare_rate: float) -> float:
    """The gateway's accepted/s as a fraction of the bare endpoint's; 0 when bare did nothing."""
    return gateway_rate / bare_rate if bare_rate > 0 else 0.0


def bare_command(port: int) -> list[str]:
    """The command that serves the bare app on ``port`` with this interpreter."""
    return [sys.executable, "-m", "regionstore_bench.bare", str(port)]


@asynccontextmanager
async def bare_server(timeout_s: float = 60.0) -> AsyncIterator[str]:
    """Run the bare app in a subprocess on a free port; yield its URL once it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *bare_command(port), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_serving(url, process, within_s=timeout_s, path="/health", every_s=0.05)
        yield url
    finally:
        await stop([process], within_s=timeout_s)


def main() -> None:
    """Serve the bare app on the port given as the only argument, one worker, like the gateway."""
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
