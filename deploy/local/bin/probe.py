"""Readiness probes for process-compose that need a real client: exit 0 when ready.

Runs with the project venv's python (aiokafka and pymongo are project dependencies).
  probe.py kafka 127.0.0.1:9092
  probe.py mongo mongodb://127.0.0.1:27017/?directConnection=true region_1
"""

import asyncio
import sys

TIMEOUT_S = 4


async def kafka_ready(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    await admin.start()
    try:
        # A metadata round trip only succeeds once the broker has registered with the
        # controller, which is when topics can be created.
        await admin.list_topics()
    finally:
        await admin.close()


def mongo_ready(uri: str, set_name: str) -> None:
    from pymongo import MongoClient

    ms = TIMEOUT_S * 1000
    with MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms) as client:
        hello = client.admin.command("hello")
        # mongod started with --replSet needs a one-time initiate (FerretDB has no replica sets).
        if hello.get("isreplicaset") and "setName" not in hello:
            host = uri.split("//", 1)[1].split("/", 1)[0]
            members = [{"_id": 0, "host": host}]
            client.admin.command("replSetInitiate", {"_id": set_name, "members": members})
            raise SystemExit(f"{uri}: replica set {set_name} initiated, waiting for a primary")
    if "setName" in hello and not hello.get("isWritablePrimary"):
        raise SystemExit(f"{uri}: replica set member is not primary yet")


def main() -> None:
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "kafka":
        asyncio.run(asyncio.wait_for(kafka_ready(target), TIMEOUT_S + 1))
    elif kind == "mongo":
        mongo_ready(target, sys.argv[3])
    else:
        raise SystemExit(f"unknown probe {kind!r}")


if __name__ == "__main__":
    main()
