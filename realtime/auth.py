"""Who is calling: the shop's backend (API key), a member (signed token), or an admin.

Keys are compared by their SHA-256 digests through a set lookup, so the time a check takes does
not depend on how much of a presented key matches a real one.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jwt

from engine import ids
from engine.errors import InvalidInput
from realtime.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class MemberToken(NamedTuple):
    """A verified member token: whose it is and until when (a live socket closes then)."""

    member: ids.MemberId
    expires_at_ms: int


class Auth:
    def __init__(self, api_keys: frozenset[str], admin_keys: frozenset[str], token_secret: str) -> None:
        check_secret(token_secret)
        self._api = frozenset(map(_digest, api_keys))
        self._admin = frozenset(map(_digest, admin_keys))
        self._secret = token_secret

    def shop(self, authorization: str | None) -> None:
        if _digest(_bearer(authorization)) not in self._api:
            raise Unauthorized("unknown API key")

    def admin(self, authorization: str | None) -> None:
        if _digest(_bearer(authorization)) not in self._admin:
            raise Unauthorized("unknown admin key")

    def member(self, authorization: str | None) -> ids.MemberId:
        return self.member_from_token(_bearer(authorization))

    def member_from_token(self, token: str) -> ids.MemberId:
        return self.verify_member_token(token).member

    def verify_member_token(self, token: str) -> MemberToken:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("member token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("member token is invalid") from None
        try:
            member = ids.member_id(claims["sub"], "token.sub")
        except InvalidInput:
            raise Unauthorized("member token names no valid member") from None
        return MemberToken(member, int(claims["exp"]) * 1000)  # as PyJWT reads exp when it checks it

    def mint(self, member: ids.MemberId, now_ms: int, ttl_s: int) -> tuple[str, int]:
        """A member token and its expiry (epoch ms)."""
        exp_s = now_ms // 1000 + ttl_s
        token = jwt.encode({"sub": member, "iat": now_ms // 1000, "exp": exp_s}, self._secret, algorithm=ALGORITHM)
        return token, exp_s * 1000


MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash


def check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"REKINDLE_TOKEN_SECRET must be at least {MIN_SECRET_BYTES} bytes (HS256)")


def require_self(caller: ids.MemberId, member: ids.MemberId) -> None:
    if caller != member:
        raise Forbidden("a member may only see its own data")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <credential>")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("expected Authorization: Bearer <credential>")
    return credential.strip()
