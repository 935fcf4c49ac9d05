"""Resume tokens: opaque, tamper-evident positions in an ordered export.

A token names a place in one export (its ``scope``, e.g. the dataset) by the key of the last record before it,
and says how many records came before it (its ``position``: a resumed export with a row limit sends only the
rest, and a client can show progress). It is ``payload.signature``: the payload is the scope, key and position
as JSON, base64url-encoded, and the signature an HMAC-SHA256 of the payload under the server's secret, truncated
to 128 bits. A token changed in any bit, made for
another scope, or signed with another secret is refused with :class:`~chute.exceptions.BadRequest`: the server
resumes only where it said it could, and never parses a key it did not issue. Tokens do not expire: the export
is ordered by a unique key, so "after key K" means the same thing later, to this server or another one sharing
the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import NamedTuple

import msgspec

from chute.exceptions import BadRequest, ConfigurationError

Key = int | str
MAX_TOKEN_LENGTH = 512
_SIGNATURE_BYTES = 16


class ResumePoint(NamedTuple):
    """Where a token resumes: after the record whose key is ``key``, the ``position``-th record of the export."""

    key: Key
    position: int


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ResumeTokens:
    """Issues and checks resume tokens under one secret (at least 32 bytes)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ConfigurationError("a resume token secret needs at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> ResumeTokens:
        """Tokens under the secret kept in ``path``, created (readable by the owner only) when missing, so that
        every worker and every restart of the server honours the tokens the others issued."""
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        candidate.write_text(secrets.token_hex(32))
        candidate.chmod(0o600)
        try:
            # link, not rename: when several workers start at once, the first secret wins and all read it.
            path.hardlink_to(candidate)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
        return cls(bytes.fromhex(path.read_text().strip()))

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest[:_SIGNATURE_BYTES])

    def issue(self, scope: str, key: Key, position: int = 0) -> str:
        """The token for "after the record whose key is ``key``", the ``position``-th record, in ``scope``."""
        payload = _b64encode(msgspec.json.encode([scope, key, position]))
        return f"{payload}.{self._sign(payload)}"

    def read(self, scope: str, token: str) -> ResumePoint:
        """Where ``token`` resumes; :class:`~chute.exceptions.BadRequest` unless this server issued it
        for ``scope``."""
        payload, dot, signature = token.partition(".")
        if not dot or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise BadRequest("the resume token is malformed")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise BadRequest("the resume token was not issued by this server, or was changed")
        try:
            found_scope, key, position = msgspec.json.decode(_b64decode(payload), type=tuple[str, Key, int])
        except (binascii.Error, ValueError, msgspec.DecodeError):  # signed, so only a different secret's format
            raise BadRequest("the resume token is malformed") from None
        if found_scope != scope:
            raise BadRequest(f"the resume token belongs to {found_scope!r}, not {scope!r}")
        return ResumePoint(key, position)
