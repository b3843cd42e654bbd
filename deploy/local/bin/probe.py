"""Readiness probes for process-compose: exit 0 when the server answers a real request.

Standard library only, speaking the wire protocols directly: process-compose runs these every
second or two for the life of the stack, and importing aiokafka or pymongo each time would cost
a good part of a core on a small machine.

  probe.py kafka 127.0.0.1:9092 [N]     a Metadata request lists at least N live brokers
                                        (default 1): topics of replication factor N can
                                        be created
  probe.py mongo 127.0.0.1:27017 NAME [USER PASSWORD_FILE]
                                        `hello` answers; a mongod started with --replSet NAME
                                        is initiated once and must be primary; then, logged
                                        in as USER (SCRAM-SHA-256) when given, `listDatabases`
                                        answers, which FerretDB can only do through its
                                        PostgreSQL
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import socket
import struct
import sys
from pathlib import Path

TIMEOUT_S = 3.0
KAFKA_METADATA = 3
OP_MSG = 2013


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT_S)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SystemExit("connection closed mid-response")
        data += chunk
    return data


def kafka_ready(address: str, wanted: int) -> None:
    # Metadata v4 for no topics: the brokers list is filled once the broker has registered
    # with the controller and is unfenced, which is when topics can be created.
    client_id = b"regionstore-probe"
    body = struct.pack(">hhih", KAFKA_METADATA, 4, 1, len(client_id)) + client_id
    body += struct.pack(">i?", 0, False)
    with connect(address) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        response = read_exactly(sock, size)
    # correlation id, throttle time, then the brokers array's length
    _, _, brokers = struct.unpack(">iii", response[:12])
    if brokers < wanted:
        raise SystemExit(f"kafka at {address} answers with {brokers} of {wanted} live brokers")


def bson_encode(doc: dict[str, object]) -> bytes:
    out = b""
    for key, value in doc.items():
        name = key.encode() + b"\0"
        if isinstance(value, bool):
            out += b"\x08" + name + struct.pack("<?", value)
        elif isinstance(value, int):
            out += b"\x10" + name + struct.pack("<i", value)
        elif isinstance(value, str):
            raw = value.encode() + b"\0"
            out += b"\x02" + name + struct.pack("<i", len(raw)) + raw
        elif isinstance(value, bytes):
            out += b"\x05" + name + struct.pack("<ib", len(value), 0) + value
        elif isinstance(value, list):
            out += b"\x04" + name + bson_encode({str(i): v for i, v in enumerate(value)})
        elif isinstance(value, dict):
            out += b"\x03" + name + bson_encode(value)
        else:
            raise TypeError(f"cannot encode {type(value)}")
    return struct.pack("<i", len(out) + 5) + out + b"\0"


FIXED_SIZES = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
SCALARS = {0x01: "<d", 0x08: "<?", 0x10: "<i", 0x12: "<q"}


def bson_top_level(doc: bytes) -> dict[str, object]:
    """The scalar and string fields of a document; nested values are skipped."""
    fields: dict[str, object] = {}
    pos = 4
    while doc[pos] != 0:
        kind = doc[pos]
        end = doc.index(b"\0", pos + 1)
        name, pos = doc[pos + 1 : end].decode(), end + 1
        if kind in SCALARS:
            (fields[name],) = struct.unpack_from(SCALARS[kind], doc, pos)
        if kind in FIXED_SIZES:
            pos += FIXED_SIZES[kind]
        elif kind == 0x02:
            (size,) = struct.unpack_from("<i", doc, pos)
            fields[name] = doc[pos + 4 : pos + 3 + size].decode()
            pos += 4 + size
        elif kind in (0x03, 0x04):
            pos += struct.unpack_from("<i", doc, pos)[0]
        elif kind == 0x05:
            (size,) = struct.unpack_from("<i", doc, pos)
            fields[name] = doc[pos + 5 : pos + 5 + size]
            pos += 5 + size
        else:
            break  # a type the probe never needs; the fields read so far suffice
    return fields


request_ids = itertools.count(1)


def mongo_command(sock: socket.socket, command: dict[str, object]) -> dict[str, object]:
    payload = struct.pack("<I", 0) + b"\0" + bson_encode({**command, "$db": "admin"})
    header = struct.pack("<iiii", 16 + len(payload), next(request_ids), 0, OP_MSG)
    sock.sendall(header + payload)
    (size,) = struct.unpack("<i", read_exactly(sock, 4))
    response = read_exactly(sock, size - 4)
    # rest of the header (12 bytes), flag bits (4), section kind (1), then the document
    reply = bson_top_level(response[17:])
    if reply.get("ok") != 1:
        raise SystemExit(f"{next(iter(command))} failed: {reply.get('errmsg', reply)}")
    return reply


def scram_sha256_login(sock: socket.socket, user: str, password: str) -> None:
    """SCRAM-SHA-256 (RFC 7677) as MongoDB speaks it: saslStart, then saslContinue."""
    nonce = base64.b64encode(secrets.token_bytes(24)).decode()
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    start = {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": f"n,,{first_bare}".encode()}
    reply = mongo_command(sock, {**start, "options": {"skipEmptyExchange": True}})
    server_payload = reply["payload"]
    if not isinstance(server_payload, bytes):
        raise SystemExit("SCRAM: saslStart answered without a payload")
    server_first = server_payload.decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise SystemExit("SCRAM: the server's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    payload = f"{final_bare},p={proof.decode()}".encode()
    conversation = reply["conversationId"]
    while not reply.get("done"):
        reply = mongo_command(
            sock, {"saslContinue": 1, "conversationId": conversation, "payload": payload}
        )
        payload = b""


def mongo_ready(address: str, set_name: str, login: tuple[str, str] | None) -> None:
    with connect(address) as sock:
        hello = mongo_command(sock, {"hello": 1})
        # mongod started with --replSet needs a one-time initiate (FerretDB has no replica sets).
        if hello.get("isreplicaset") and "setName" not in hello:
            members = [{"_id": 0, "host": address}]
            mongo_command(sock, {"replSetInitiate": {"_id": set_name, "members": members}})
            raise SystemExit(f"replica set {set_name} initiated; waiting for a primary")
        if "setName" in hello and not hello.get("isWritablePrimary"):
            raise SystemExit(f"{address} is not primary yet")
        if login:
            scram_sha256_login(sock, *login)
        mongo_command(sock, {"listDatabases": 1, "nameOnly": True})


def main() -> None:
    kind, address = sys.argv[1], sys.argv[2]
    try:
        if kind == "kafka":
            kafka_ready(address, int(sys.argv[3]) if len(sys.argv) > 3 else 1)
        elif kind == "mongo":
            login = None
            if len(sys.argv) > 4:
                login = (sys.argv[4], Path(sys.argv[5]).read_text().strip())
            mongo_ready(address, sys.argv[3], login)
        else:
            raise SystemExit(f"unknown probe {kind!r}")
    except OSError as exc:
        raise SystemExit(f"{kind} at {address}: {exc}") from None


if __name__ == "__main__":
    main()
