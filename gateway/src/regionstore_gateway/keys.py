"""Command line to create, list and revoke the gateway's API keys.

  python -m regionstore_gateway.keys create --role writer [--name N] [--rate R --burst B]
  python -m regionstore_gateway.keys list
  python -m regionstore_gateway.keys revoke KEY_ID
  python -m regionstore_gateway.keys ensure --file PATH [--role operator] [--name N]

It reaches the Redis and uses the server secret of the gateway's settings
(``REGIONSTORE_REDIS__URL``, ``REGIONSTORE_AUTH__SECRET``); ``make key`` and ``make revoke-key``
pass the local stack's. A key is printed once, at creation: only its digest is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from regionstore_gateway.auth.apikeys import (
    KeyHasher,
    KeyRecord,
    RedisKeyStore,
    now_iso,
    parse_key,
)
from regionstore_gateway.auth.roles import Role
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clients import redis_client


def key_store(redis: Redis, settings: GatewaySettings) -> tuple[RedisKeyStore, KeyHasher]:
    """The key records and the hasher of these settings."""
    return (
        RedisKeyStore(redis, settings.auth.key_prefix),
        KeyHasher(settings.auth.secret.get_secret_value()),
    )


async def ensure(
    store: RedisKeyStore, hasher: KeyHasher, key: str | None, *, role: Role, name: str
) -> tuple[str, str]:
    """Make sure a kept key (an operator's key file) works: the key to keep, and what was done.

    No key (or not a key): a new one. A key Redis does not know (Redis was wiped) or knows
    under another digest (the server secret changed): registered again. A revoked key: a new
    one replaces it.
    """
    parsed = parse_key(key.strip()) if key else None
    if key is None or parsed is None:
        new, issued = await store.issue(hasher, role, name=name)
        return new, f"created {issued.key_id}"
    record = await store.get(parsed.key_id)
    if record is not None and record.revoked_at is not None:
        new, issued = await store.issue(hasher, role, name=name)
        return new, f"replaced revoked {parsed.key_id} with {issued.key_id}"
    if record is not None and hasher.matches(parsed.secret, record.digest):
        return key.strip(), f"kept {parsed.key_id}"
    await store.put(
        KeyRecord(
            key_id=parsed.key_id,
            role=record.role if record is not None else role,
            digest=hasher.digest(parsed.secret),
            name=record.name if record is not None else name,
            created_at=record.created_at if record is not None else now_iso(),
        )
    )
    return key.strip(), f"registered {parsed.key_id} again"


def _write_private(path: Path, key: str) -> None:
    """Write a key readable by its owner only, replacing any earlier file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{key}\n")
    partial.replace(path)


def describe(record: KeyRecord) -> str:
    """One line per key: id, role, created, limits, state, name (never the digest)."""
    limits = f"{record.rate or '-'}/s burst {record.burst or '-'}"
    state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
    return (
        f"{record.key_id}  {record.role.value:<8}  {record.created_at:<25}  {limits:<20}  "
        f"{state:<30}  {record.name}"
    )


async def run(arguments: argparse.Namespace, settings: GatewaySettings) -> int:
    """Carry out one command; the process exit code."""
    redis = redis_client(settings.redis, "regionstore-keys")
    try:
        store, hasher = key_store(redis, settings)
        if arguments.command == "create":
            key, record = await store.issue(
                hasher,
                Role(arguments.role),
                name=arguments.name,
                rate=arguments.rate,
                burst=arguments.burst,
            )
            print(f"key id: {record.key_id}  role: {record.role.value}", file=sys.stderr)
            print("the key (shown once; keep it secret):", file=sys.stderr)
            print(key)
        elif arguments.command == "list":
            for record in await store.all():
                print(describe(record))
        elif arguments.command == "revoke":
            revoked = await store.revoke(arguments.key_id)
            if revoked is None:
                print(f"no key {arguments.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.key_id} ({revoked.role.value}) at {revoked.revoked_at}")
        else:
            key, done = await ensure(
                store, hasher, arguments.existing, role=Role(arguments.role), name=arguments.name
            )
            arguments.kept = key
            print(f"{arguments.file}: {done}")
    finally:
        await redis.aclose()
    return 0


def redis_failure(error: RedisError) -> str:
    """What a Redis failure means for the keys: refused and unchanged, or perhaps changed."""
    if isinstance(error, ResponseError):
        return f"Redis refused the command ({error}); nothing was changed"
    if isinstance(error, RedisTimeoutError):
        return f"Redis did not answer in time ({error}); the change may or may not have been made"
    return f"Redis cannot be reached ({error}); nothing was changed"


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="python -m regionstore_gateway.keys", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    roles = [role.value for role in Role]
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", choices=roles, required=True)
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--rate", type=float, help="requests per second (default: the gateway's)")
    create.add_argument("--burst", type=int, help="requests at once (default: the gateway's)")
    commands.add_parser("list", help="every key: id, role, limits, state, name (no secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    ensure_ = commands.add_parser("ensure", help="make sure the key in a file is registered")
    ensure_.add_argument("--file", required=True)
    ensure_.add_argument("--role", choices=roles, default=Role.OPERATOR.value)
    ensure_.add_argument("--name", default="operator")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it."""
    arguments = parser().parse_args(argv)
    for limit in ("rate", "burst"):
        value = getattr(arguments, limit, None)
        if value is not None and value <= 0:
            parser().error(f"--{limit} must be positive")
    if arguments.command == "ensure":
        path = Path(arguments.file)
        arguments.existing = path.read_text() if path.exists() else None
    try:
        code = asyncio.run(run(arguments, GatewaySettings()))
    except RedisError as error:
        print(f"error: {redis_failure(error)}", file=sys.stderr)
        return 1
    if arguments.command == "ensure" and arguments.kept != (arguments.existing or "").strip():
        _write_private(path, arguments.kept)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
