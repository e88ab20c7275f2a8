"""A received webhook as a record: its parameters, their canonical JSON and fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

Params = dict[str, str | list[str]]


@dataclass(slots=True)
class EventRecord:
    """One received webhook before it is stored."""

    event_id: str | None  # None: the writer assigns one when it stores the record
    received_at: datetime
    kind: str
    http_method: str
    params_json: str
    signature: str
    params_hash: int
    params: Params
    duplicate: bool = False

    def ensure_id(self) -> str:
        if self.event_id is None:
            self.event_id = str(uuid.uuid4())
        return self.event_id

    def to_json(self) -> str:
        return json.dumps(
            {
                "event_id": self.ensure_id(),
                "received_at": self.received_at.isoformat(),
                "kind": self.kind,
                "http_method": self.http_method,
                "params": self.params_json,
                "signature": self.signature,
                "params_hash": self.params_hash,
                "duplicate": self.duplicate,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> EventRecord:
        data = json.loads(line)
        return cls(
            params=json.loads(data["params"]),
            event_id=data["event_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            kind=data["kind"],
            http_method=data["http_method"],
            params_json=data["params"],
            signature=data["signature"],
            params_hash=int(data["params_hash"]),
            duplicate=bool(data["duplicate"]),
        )


def assign_ids(records: Sequence[EventRecord]) -> None:
    """Give every record without an event_id a random UUID (version 4, as `uuid.uuid4()`'s
    text), from one read of the OS's random source for the whole batch."""
    missing = [r for r in records if r.event_id is None]
    if not missing:
        return
    raw = bytearray(os.urandom(16 * len(missing)))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    for k, record in zip(range(0, len(h), 32), missing, strict=True):
        record.event_id = (
            f"{h[k : k + 8]}-{h[k + 8 : k + 12]}-{h[k + 12 : k + 16]}-{h[k + 16 : k + 20]}"
            f"-{h[k + 20 : k + 32]}"
        )


# Built once: json.dumps with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_json(params: Params) -> str:
    """The parameters as stored in `params`: keys sorted, so the text is also the fingerprint's
    canonical form and a webhook is encoded once."""
    return _CANONICAL.encode(params)


def params_hash(kind: str, canonical: str) -> int:
    """A 64-bit fingerprint of (kind, parameters as `canonical_json` writes them): key order,
    method and nonce don't count."""
    digest = hashlib.blake2b(f"{kind}\n{canonical}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def make_record(
    kind: str,
    http_method: str,
    params: Params,
    signature: str,
    received_at: datetime,
    event_id: str | None = None,
) -> EventRecord:
    params_json = canonical_json(params)
    return EventRecord(
        event_id=event_id,
        received_at=received_at,
        kind=kind,
        http_method=http_method,
        params_json=params_json,
        signature=signature,
        params_hash=params_hash(kind, params_json),
        params=params,
    )
