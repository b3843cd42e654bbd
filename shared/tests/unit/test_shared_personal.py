"""Crypto-shredding: sealed upserts on the wire, opened by appliers, erased with their key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import cast

import pytest
from pydantic import ValidationError

from regionstore_shared.apply import BatchApplier, Envelope, Suspicion
from regionstore_shared.documents import DELETED, HOME, VERSION, Collection
from regionstore_shared.personal import (
    CustomerKey,
    ErasedError,
    opened,
    seal,
    seal_all,
    sealed_upsert,
    unseal,
)
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    Target,
    UpsertCustomer,
    decode_command,
    encode_command,
)
from regionstore_shared.settings import CommonSettings
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import FakeCollection, FakeStatus

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
MARKER = "zzmarkerville"
HOME_1 = Target(region="region_1", role=Applier.WRITER, action=Action.UPSERT)
GONE_2 = Target(region="region_2", role=Applier.REPLICATOR, action=Action.TOMBSTONE)


def customer(city: str = MARKER) -> Customer:
    return Customer(
        customer_id=CUSTOMER,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=14409,
        customer_city=city,
        customer_state="SP",
    )


def upsert(version: int = 5, city: str = MARKER) -> UpsertCustomer:
    return UpsertCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=1_700_000_000_000,
        targets=(HOME_1, GONE_2),
        customer=customer(city),
        home_region="region_1",
    )


def delete(version: int = 9) -> DeleteCustomer:
    return DeleteCustomer(
        command_id=uuid.uuid4(),
        version=version,
        issued_at_ms=1_700_000_000_000,
        targets=(Target(region="region_1", role=Applier.WRITER, action=Action.TOMBSTONE),),
        customer_id=CUSTOMER,
    )


class TestSeal:
    def test_the_sealed_wire_form_holds_no_field_in_clear(self) -> None:
        command = sealed_upsert(upsert(), CustomerKey.new())
        raw = encode_command(command)
        assert MARKER.encode() not in raw
        assert b"861eff4711a542e4b93843c6dd7febb0" not in raw
        body = json.loads(raw)
        assert body["schema_version"] == 2
        assert "customer" not in body
        assert body["sealed"]["customer_id"] == CUSTOMER

    def test_the_wire_form_decodes_unopened_and_opens_with_its_key(self) -> None:
        key = CustomerKey.new()
        decoded = decode_command(encode_command(sealed_upsert(upsert(), key)))
        assert isinstance(decoded, UpsertCustomer)
        assert decoded.customer is None
        assert decoded.key == CUSTOMER
        assert opened(decoded, {(CUSTOMER, key.key_id): key}).customer == customer()

    def test_a_command_written_before_sealing_still_decodes_in_clear(self) -> None:
        plain = upsert()
        raw = encode_command(plain)
        assert json.loads(raw)["schema_version"] == 1
        decoded = decode_command(raw)
        assert isinstance(decoded, UpsertCustomer)
        assert decoded.customer == customer()
        assert opened(decoded, {}) is decoded  # nothing to open

    def test_one_command_sealed_twice_is_the_same_bytes(self) -> None:
        key, command = CustomerKey.new(), upsert()
        assert seal(customer(), key, command.command_id) == seal(
            customer(), key, command.command_id
        )
        assert (
            seal(customer(), key, uuid.uuid4()).nonce != seal(customer(), key, uuid.uuid4()).nonce
        )

    def test_another_key_or_none_cannot_open_it(self) -> None:
        sealed = seal(customer(), CustomerKey.new(), uuid.uuid4())
        with pytest.raises(ErasedError):
            unseal(sealed, None)
        with pytest.raises(ErasedError):
            unseal(sealed, CustomerKey(sealed.key_id, CustomerKey.new().secret))

    def test_a_key_never_shows_its_secret(self) -> None:
        key = CustomerKey.new()
        assert key.secret.hex() not in repr(key)
        assert repr(key.secret) not in repr(key)

    def test_a_parked_copy_stays_sealed(self) -> None:
        key = CustomerKey.new()
        raw = encode_command(sealed_upsert(upsert(), key))
        decoded = decode_command(raw)
        assert isinstance(decoded, UpsertCustomer)
        reopened = opened(decoded, {(CUSTOMER, key.key_id): key})
        # What the parker produces for a region that is down: the opened command, encoded.
        assert MARKER.encode() not in encode_command(reopened)


class TestSealAll:
    async def test_a_write_after_a_delete_gets_a_key_the_delete_spares(self) -> None:
        keys = MemoryKeyring()
        first, gone, after = await seal_all([upsert(5), delete(6), upsert(7)], keys)
        assert isinstance(first, UpsertCustomer)
        assert isinstance(after, UpsertCustomer)
        assert first.sealed is not None
        assert after.sealed is not None
        assert isinstance(gone, DeleteCustomer)
        assert first.sealed.key_id != after.sealed.key_id
        # Sealing destroys nothing: a delete Kafka then refuses changes nothing.
        both = [(CUSTOMER, first.sealed.key_id), (CUSTOMER, after.sealed.key_id)]
        assert len(await keys.find(both)) == 2
        # The delete's acknowledgement destroys the key made before it, not the one after.
        assert await keys.destroy({CUSTOMER: gone.version}) == 1
        held = await keys.find(both)
        assert list(held) == [(CUSTOMER, after.sealed.key_id)]
        with pytest.raises(ErasedError):
            opened(first.model_copy(update={"customer": None}), held)
        assert opened(after.model_copy(update={"customer": None}), held).customer is not None

    async def test_a_write_before_a_delete_in_flight_does_not_reuse_a_doomed_key(self) -> None:
        keys = MemoryKeyring()
        (old,) = await seal_all([upsert(5)], keys)
        (_, later) = await seal_all([delete(8), upsert(9)], keys)
        assert isinstance(old, UpsertCustomer)
        assert isinstance(later, UpsertCustomer)
        assert old.sealed is not None
        assert later.sealed is not None
        assert later.sealed.key_id != old.sealed.key_id

    async def test_one_customer_keeps_one_key_across_writes(self) -> None:
        keys = MemoryKeyring()
        (one,) = await seal_all([upsert(5)], keys)
        (two,) = await seal_all([upsert(6, city="campinas")], keys)
        assert isinstance(one, UpsertCustomer)
        assert isinstance(two, UpsertCustomer)
        assert one.sealed is not None
        assert two.sealed is not None
        assert one.sealed.key_id == two.sealed.key_id

    async def test_a_sealed_command_is_sent_again_as_it_is(self) -> None:
        keys = MemoryKeyring()
        (sealed,) = await seal_all([upsert()], keys)
        assert await seal_all([sealed], keys) == [sealed]


def every_target(command: Command) -> Iterable[Target]:
    return command.targets


class TestApply:
    def applier(self, keys: MemoryKeyring) -> tuple[BatchApplier, dict[str, FakeCollection]]:
        stores = {name: FakeCollection() for name in ("region_1", "region_2")}
        applier = BatchApplier(
            collections=cast("Mapping[str, Collection]", stores),
            status=FakeStatus(),
            suspicion=Suspicion(3.0),
            parker=None,
            role="writer",
            keyring=keys,
        )
        return applier, stores

    async def test_a_sealed_upsert_is_opened_and_written_in_clear(self) -> None:
        keys = MemoryKeyring()
        (command,) = await seal_all([upsert()], keys)
        wire = decode_command(encode_command(command))
        applier, stores = self.applier(keys)
        await applier.apply([Envelope(wire, encode_command(wire))], every_target)
        assert stores["region_1"].docs[CUSTOMER]["customer_city"] == MARKER
        assert stores["region_2"].docs[CUSTOMER][DELETED] is True

    async def test_an_upsert_whose_key_is_destroyed_is_applied_as_a_tombstone(self) -> None:
        keys = MemoryKeyring()
        (command,) = await seal_all([upsert(version=5)], keys)
        await keys.destroy({CUSTOMER: 6})
        wire = decode_command(encode_command(command))
        applier, stores = self.applier(keys)
        outcome = await applier.apply([Envelope(wire, encode_command(wire))], every_target)
        assert outcome.written == 2
        document = stores["region_1"].docs[CUSTOMER]
        assert (document[DELETED], document[VERSION]) == (True, 5)
        assert HOME not in document  # nothing says where the erased customer lived
        assert MARKER not in json.dumps(document, default=str)


class TestBound:
    def test_the_bound_is_30_days_by_default_and_at_most(self) -> None:
        assert CommonSettings().erasure_within == timedelta(days=30)
        assert CommonSettings(erasure_within=timedelta(seconds=20)).erasure_within.seconds == 20
        with pytest.raises(ValidationError, match="erasure_within"):
            CommonSettings(erasure_within=timedelta(days=31))
