"""Who is calling: the shop's backend (API key), a member (signed token), or an admin.

Keys are compared by their SHA-256 digests through a set lookup, so the time a check takes does
not depend on how much of a presented key matches a real one.

A refusal says which credential the route takes, and which kind it was given when that is one of
the others: "a member token on a shop route" is a mistake of the caller's wiring, not a bad key.

Member tokens are checked against the service's clock (the dev clock under ``--dev-clock``), the
clock that minted them through ``POST /v1/tokens``: a token minted after the dev clock moved
forward is valid on that service, and one that has expired by it is expired.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jwt

from engine import ids
from engine.clock import Clock, SystemClock
from engine.errors import InvalidInput
from realtime.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
#: Verified member tokens a process remembers (about 400 bytes each: 4 MB at most).
VERIFIED_CACHE = 10_000

SHOP_KEY, ADMIN_KEY, MEMBER_TOKEN = "a shop API key", "an admin key", "a member token"

#: The signature and the claims' presence by PyJWT; the time claims by the service's clock
#: (``verify_member_token``), not by PyJWT's, which is the wall clock.
_UNTIMED = {"require": ["sub", "exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class MemberToken(NamedTuple):
    """A verified member token: whose it is and until when (a live socket closes then)."""

    member: ids.MemberId
    expires_at_ms: int


class Auth:
    def __init__(self, api_keys: frozenset[str], admin_keys: frozenset[str], token_secret: str,
                 clock: Clock | None = None) -> None:
        check_secret(token_secret)
        self._api = frozenset(map(_digest, api_keys))
        self._admin = frozenset(map(_digest, admin_keys))
        self._secret = token_secret
        self._clock = clock or SystemClock()  # what a token's exp, iat and nbf are checked against
        #: Tokens whose signature checked out, with their claims (``_decode``); a refused one is
        #: never kept. Bounded: the oldest goes first.
        self._verified: dict[str, tuple[int, int | None, int | None, ids.MemberId]] = {}

    def shop(self, authorization: str | None) -> None:
        credential = _bearer(authorization, SHOP_KEY)
        if _digest(credential) not in self._api:
            raise Unauthorized(f"this route takes {SHOP_KEY}{self._given(credential)}")

    def admin(self, authorization: str | None) -> None:
        credential = _bearer(authorization, ADMIN_KEY)
        if _digest(credential) not in self._admin:
            raise Unauthorized(f"this route takes {ADMIN_KEY}{self._given(credential)}")

    def member(self, authorization: str | None) -> ids.MemberId:
        credential = _bearer(authorization, MEMBER_TOKEN)
        try:
            return self.member_from_token(credential)
        except Unauthorized:
            kind = self._key_kind(credential)
            if kind is None:
                raise
            raise Unauthorized(f"this route takes {MEMBER_TOKEN}, not {kind}") from None

    def member_from_token(self, token: str) -> ids.MemberId:
        return self.verify_member_token(token).member

    def verify_member_token(self, token: str) -> MemberToken:
        known = self._verified.get(token)
        if known is None:
            known = self._decode(token)
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.pop(next(iter(self._verified)))  # the oldest: insertion order
            self._verified[token] = known
        exp_s, iat_s, nbf_s, member = known
        now_s = self._clock.now_ms() / 1000
        if exp_s <= now_s:  # PyJWT's rule (no leeway): a token is expired at its exp second
            raise Unauthorized("member token has expired")
        if (iat_s is not None and iat_s > now_s) or (nbf_s is not None and nbf_s > now_s):
            raise Unauthorized("member token is not valid yet (iat or nbf after the service's clock)")
        return MemberToken(member, exp_s * 1000)

    def _decode(self, token: str) -> tuple[int, int | None, int | None, ids.MemberId]:
        """The signature checked and the claims read, once a token: an app sends the same token
        with every call, and checking HS256 cost a member route a fifth of its CPU (the time
        claims are checked on every call, against the service's clock)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options=_UNTIMED)  # type: ignore[arg-type]
        except jwt.InvalidTokenError:
            raise Unauthorized("member token is invalid") from None
        exp_s, iat_s, nbf_s = (_seconds(claims, name) for name in ("exp", "iat", "nbf"))
        if exp_s is None:
            raise Unauthorized("member token is invalid")
        try:
            member = ids.member_id(claims["sub"], "token.sub")
        except InvalidInput:
            raise Unauthorized("member token names no valid member") from None
        return exp_s, iat_s, nbf_s, member

    def _key_kind(self, credential: str) -> str | None:
        digest = _digest(credential)
        return SHOP_KEY if digest in self._api else ADMIN_KEY if digest in self._admin else None

    def _given(self, credential: str) -> str:
        """What a refused credential is when it is another kind than the route takes (asked only
        once it is refused: a right credential costs nothing more)."""
        kind = self._key_kind(credential)
        if kind is not None:
            return f", not {kind}"
        if credential.count(".") == 2:
            try:
                jwt.decode(credential, self._secret, algorithms=[ALGORITHM], options=_UNTIMED)  # type: ignore[arg-type]
            except jwt.InvalidTokenError:
                pass
            else:
                return f", not {MEMBER_TOKEN}"
        return ": the credential given is not one"

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


def _seconds(claims: dict[str, object], name: str) -> int | None:
    """A time claim as integer epoch seconds (None if absent); 401 if it is not a number."""
    value = claims.get(name)
    if value is None:
        return None
    seconds = ids.whole(value)
    if seconds is None:
        raise Unauthorized(f"member token is invalid ({name} is not an integer)")
    return seconds


def _bearer(authorization: str | None, wanted: str) -> str:
    if not authorization:
        raise Unauthorized(f"missing Authorization: Bearer <credential>; this route takes {wanted}")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized(f"expected Authorization: Bearer <credential>; this route takes {wanted}")
    return credential.strip()
