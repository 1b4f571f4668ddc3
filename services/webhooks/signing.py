"""Standard Webhooks signatures: ``whsec_`` secrets and ``v1,`` HMAC-SHA256 over id.ts.body.

Pure: no I/O. Randomness comes in through ``token_bytes`` so tests can pin it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as stdlib_secrets
from collections.abc import Callable, Iterable

from services.core.errors import InvalidInput

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Receivers should refuse timestamps further than this from their clock (replay window).
TOLERANCE_SECONDS = 300


class SignatureError(InvalidInput):
    """A webhook failed verification (missing header, stale timestamp, no matching signature)."""

    code = "bad_signature"


def new_secret(token_bytes: Callable[[int], bytes] = stdlib_secrets.token_bytes) -> str:
    """A fresh secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for (the base64-decoded part)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("secret is not whsec_ + base64", param="secret") from None


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated."""
    return " ".join(sign(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets)


def headers(secrets: Iterable[str], *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (plus the JSON content type)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }


def verify(secret: str, *, headers: dict[str, str], body: bytes, now: int) -> None:
    """Check a received webhook as a receiver would (tests and the README's reference).

    Raises:
        SignatureError: a header is missing, the timestamp is more than 5 minutes away from
            ``now``, or no ``v1`` signature matches.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    given = lowered.get("webhook-signature")
    if not msg_id or not given or not stamp.isdigit():
        raise SignatureError("missing or malformed webhook headers")
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise SignatureError("timestamp outside the tolerance")
    expected = sign(secret, msg_id=msg_id, timestamp=int(stamp), body=body).encode()
    if not any(hmac.compare_digest(expected, part.encode()) for part in given.split(" ")):
        raise SignatureError("no matching signature")
