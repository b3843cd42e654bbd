"""A bare FastAPI endpoint with the gateway's body validation, to measure the gateway against."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, status

from regionstore_shared.schemas import Customer


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
