"""API keys repository: create, find by bearer token, list, revoke, and note use.

A token is ``nd_`` + 8 characters that identify the key + 43 secret characters (256 random
bits). Only the token's SHA-256 is stored; a slow password hash buys nothing for a random
token of that length. The first 11 characters (``nd_`` and the identifier) are the key's
``prefix``: not secret, shown by ``newsdesk keys list`` and in logs, and the unique column a
token is looked up by before its hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from services.core.errors import Conflict, InvalidInput, NotFound
from services.db.models import ApiKey

SCOPES = ("read", "write")
TOKEN_PREFIX = "nd_"
MAX_NAME = 100
_ID_BYTES, _SECRET_BYTES = 6, 32  # 8 and 43 URL-safe base64 characters
PREFIX_CHARS = len(TOKEN_PREFIX) + 8
_TOKEN = re.compile(r"nd_[A-Za-z0-9_-]{51}")


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A key just created, with the token: the only time the token exists outside a client."""

    record: ApiKeyRecord
    token: str = field(repr=False)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(token: str) -> bool:
    """True when ``token`` has the shape of a newsdesk key (not whether one exists)."""
    return _TOKEN.fullmatch(token) is not None


def _record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(str(s) for s in row.scopes or ()),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def check_scopes(scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in canonical order; unknown or none is an InvalidInput."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(
            f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}", param="scope"
        )
    if not scopes:
        raise InvalidInput("a key needs at least one scope", param="scope")
    return tuple(s for s in SCOPES if s in scopes)


def create_key(
    session: Session, *, name: str, scopes: tuple[str, ...] | list[str], now: datetime
) -> NewKey:
    """Store a new key and return it with its token.

    Raises:
        InvalidInput: a blank or overlong name, or bad scopes.
        Conflict: no free prefix was found (practically impossible: 48 random bits).
    """
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be 1 to {MAX_NAME} characters", param="name")
    chosen = check_scopes(scopes)
    for _ in range(5):
        token = (
            TOKEN_PREFIX + secrets.token_urlsafe(_ID_BYTES) + secrets.token_urlsafe(_SECRET_BYTES)
        )
        prefix = token[:PREFIX_CHARS]
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    else:
        raise Conflict("could not find an unused key prefix; try again")
    row = ApiKey(
        name=name, prefix=prefix, key_hash=hash_token(token), scopes=list(chosen), created_at=now
    )
    session.add(row)
    session.flush()
    return NewKey(record=_record(row), token=token)


def find_by_token(session: Session, token: str) -> ApiKeyRecord | None:
    """The key ``token`` belongs to, revoked or not; None when it matches no key."""
    if not looks_like_token(token):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == token[:PREFIX_CHARS]))
    if row is None or not hmac.compare_digest(row.key_hash, hash_token(token)):
        return None
    return _record(row)


def list_keys(session: Session) -> list[ApiKeyRecord]:
    """Every key, oldest first, revoked ones included."""
    return [_record(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def count_keys(session: Session) -> int:
    """How many keys were ever created (revoked ones count)."""
    return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)


def revoke_key(session: Session, key_id: int, *, now: datetime) -> tuple[ApiKeyRecord, bool]:
    """Revoke a key; returns it and whether this call revoked it (False: it already was).

    Raises:
        NotFound: no key has this id.
    """
    row = session.get(ApiKey, key_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no API key {key_id}")
    if row.revoked_at is not None:
        return _record(row), False
    row.revoked_at = now
    session.flush()
    return _record(row), True


def mark_used(session: Session, key_id: int, *, now: datetime, every: timedelta) -> bool:
    """Set ``last_used_at`` unless it was set less than ``every`` ago; True when written.

    The condition is in the UPDATE, so API processes sharing the database write at most once
    per ``every`` between them, whatever their own bookkeeping says.
    """
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - every))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
