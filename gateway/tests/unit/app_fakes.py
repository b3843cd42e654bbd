"""The gateway app over fake Kafka, Redis and stores, for tests that go through its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import httpx
from aiokafka.errors import UnknownTopicOrPartitionError
from asgi_lifespan import LifespanManager
from audit_fakes import audit_trail, recent_changes
from auth_fakes import HEADERS, authenticator
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError

from regionstore_gateway.adapters.command_topic import CommandTopic
from regionstore_gateway.adapters.idempotency import IdempotencyStore, Record, decode_record
from regionstore_gateway.adapters.repository import CustomerRepository
from regionstore_gateway.main import create_app
from regionstore_gateway.services.backpressure import Backpressure
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import Clients, State, serving
from regionstore_shared.apply import Suspicion
from regionstore_shared.clock import HybridClock
from regionstore_shared.documents import Collection
from regionstore_shared.schemas import Command, decode_command
from regionstore_shared.status import NodeStatus
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import OnePartition, appended

Document = dict[str, Any]
NAMES = ("region_1", "region_2", "region_3")
CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
PREFIX = "test:idempotency:"
TTL_S = 3600
ACK = "ack"
NEVER = "never"  # handed to the producer, never acknowledged
SEND_FAILS = "send fails"  # send() raises: the record never entered the producer's buffer


def body(zip_prefix: int = 14409, customer_id: str = CUSTOMER, city: str = "franca") -> Document:
    return {
        "customer_id": customer_id,
        "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
        "customer_zip_code_prefix": zip_prefix,
        "customer_city": city,
        "customer_state": "SP",
    }


class FakeProducer(OnePartition):
    """One future per send, resolved as scripted (ACK once the script runs out)."""

    def __init__(self) -> None:
        self.script: list[object] = []
        self.sent: list[bytes] = []
        self.on_send: Callable[[Command], None] | None = None

    async def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        outcome = self.script.pop(0) if self.script else ACK
        if outcome == SEND_FAILS:
            raise UnknownTopicOrPartitionError()
        self.sent.append(value)
        if self.on_send is not None:
            self.on_send(decode_command(value))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif outcome == ACK:
            future.set_result(appended(topic, len(self.sent) - 1))
        return future

    def commands(self) -> list[Command]:
        return [decode_command(value) for value in self.sent]


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, str | bytes, dict[str, Any]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def set(self, name: str, value: str | bytes, **options: Any) -> FakePipeline:
        self.queued.append((name, value, options))
        return self

    async def execute(self) -> list[bool | None]:
        self.redis.check()
        done = [self.redis.store(name, value, **options) for name, value, options in self.queued]
        if self.redis.after_execute is not None:
            hook, self.redis.after_execute = self.redis.after_execute, None
            hook()
        return done


class FakeRedis:
    """Strings with an expiry each; ``down`` makes every command fail as a refused connection."""

    def __init__(self) -> None:
        self.values: dict[str, str | bytes] = {}
        self.ttls: dict[str, int | None] = {}
        self.down = False
        self.after_mget: Callable[[], None] | None = None
        self.after_execute: Callable[[], None] | None = None

    def check(self) -> None:
        if self.down:
            raise RedisConnectionError(
                "Error 111 connecting to 127.0.0.1:6379. Connection refused."
            )

    async def mget(self, keys: list[str]) -> list[str | bytes | None]:
        self.check()
        values = [self.values.get(k) for k in keys]
        if self.after_mget is not None:
            hook, self.after_mget = self.after_mget, None
            hook()
        return values

    async def get(self, name: str) -> str | bytes | None:
        self.check()
        return self.values.get(name)

    async def set(self, name: str, value: str | bytes, **options: Any) -> bool | None:
        self.check()
        return self.store(name, value, **options)

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    async def delete(self, *names: str) -> int:
        self.check()
        gone = [name for name in names if self.values.pop(name, None) is not None]
        for name in gone:
            self.ttls.pop(name, None)
        return len(gone)

    def store(
        self,
        name: str,
        value: str | bytes,
        *,
        ex: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool | None:
        if (nx and name in self.values) or (xx and name not in self.values):
            return None
        self.values[name] = value
        if not keepttl:
            self.ttls[name] = ex
        return True

    def records(self) -> list[Record]:
        return [decode_record(Record, v) for k, v in self.values.items() if ":batch:" not in k]


class FakeCollection:
    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.reads = 0
        self.fail_with: Exception | None = None

    async def find_one(
        self, query: Document, projection: Mapping[str, int] | None = None
    ) -> Document | None:
        self.reads += 1
        if self.fail_with is not None:
            raise self.fail_with
        doc = self.docs.get(query["_id"])
        return None if doc is None else dict(doc)


class FakeBoard:
    async def all(self) -> dict[str, NodeStatus]:
        return {}


class Gateway:
    """The app over fakes, and a client talking to it in process."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.producer = FakeProducer()
        self.redis = FakeRedis()
        self.stores = {name: FakeCollection() for name in NAMES}
        self.keys = IdempotencyStore(cast(Any, self.redis), prefix=PREFIX, ttl_s=TTL_S)
        # The consumers' lag Kafka would report: set it, then ``await backpressure.refresh()``.
        self.lag: dict[str, int | None] = {}
        self.backpressure = Backpressure(self._read_lag, settings.backpressure)
        repository = CustomerRepository(
            cast("Mapping[str, Collection]", self.stores),
            settings.region_map,
            Suspicion(3.0),
            read_deadline_s=settings.api.read_deadline_ms / 1000,
        )
        self.keyring = MemoryKeyring()
        self.writes = CommandTopic(
            settings=settings,
            producer=cast(Any, self.producer),
            board=cast(Any, FakeBoard()),
            repository=repository,
            clock=HybridClock(1),
            keyring=self.keyring,
        )
        self.state = serving(
            Clients(
                settings=settings,
                producer=cast(Any, self.producer),
                board=cast(Any, FakeBoard()),
                repository=repository,
                clock=HybridClock(1),
                idempotency=self.keys,
                changes=cast(Any, None),
                backlog=cast(Any, None),
                applied=cast(Any, None),
                auth=authenticator(),
                audit=audit_trail(settings),
                recent=recent_changes(),
                backpressure=self.backpressure,
                keyring=self.keyring,
            )
        )
        self.app = create_app(settings, open_state=self._open_state)

    async def _read_lag(self) -> dict[str, int | None]:
        return dict(self.lag)

    @contextlib.asynccontextmanager
    async def _open_state(self, _: FastAPI) -> AsyncIterator[State]:
        yield self.state

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with LifespanManager(self.app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", headers=HEADERS
            ) as client:
                yield client

    def live(self, region: str, version: int, city: str = "franca") -> None:
        self.stores[region].docs[CUSTOMER] = {
            **body(city=city),
            "_id": CUSTOMER,
            "_v": version,
            "_deleted": False,
            "_home": "region_1",
        }

    def reads(self) -> int:
        return sum(store.reads for store in self.stores.values())
