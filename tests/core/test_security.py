from __future__ import annotations

import pytest

from agenthub.core import security
from agenthub.core.security import (
    InvalidToken,
    TokenClaims,
    TokenUse,
    VerifiedTokens,
    decode_token,
    encode_token,
    hash_api_key,
    hash_password,
    new_api_key,
    verify_password,
)

SECRET = "s" * 40


def test_password_hash_is_argon2_and_verifies() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "correct horse")


def test_api_keys_are_random_prefixed_and_hashed() -> None:
    a, b = new_api_key(), new_api_key()
    assert a.startswith("ah_")
    assert a != b
    assert len(a) > 40
    assert hash_api_key(a) != a
    assert len(hash_api_key(a)) == 64


def test_tokens_round_trip_and_are_typed() -> None:
    token, claims = encode_token(SECRET, subject="u1", use="access", ttl_s=60, extra={"k": "v"})
    decoded = decode_token(SECRET, token, use="access")
    assert (decoded.subject, decoded.jti, decoded.extra["k"]) == ("u1", claims.jti, "v")
    with pytest.raises(InvalidToken) as wrong_use:
        decode_token(SECRET, token, use="refresh")
    assert wrong_use.value.reason == "invalid"
    with pytest.raises(InvalidToken) as wrong_key:
        decode_token("t" * 40, token, use="access")
    assert wrong_key.value.reason == "invalid"


def test_expired_token_is_reported_as_expired() -> None:
    token, _ = encode_token(SECRET, subject="u1", use="access", ttl_s=-5)
    with pytest.raises(InvalidToken) as exc:
        decode_token(SECRET, token, use="access")
    assert exc.value.reason == "expired"


def test_verified_tokens_decode_once_then_serve_the_same_claims(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verified = VerifiedTokens("s" * 32)
    token, issued = encode_token("s" * 32, subject="u1", use="access", ttl_s=60, extra={"k": 1})
    calls = []
    real = security.decode_token

    def counting(secret: str, value: str, *, use: TokenUse) -> TokenClaims:
        calls.append(value)
        return real(secret, value, use=use)

    monkeypatch.setattr(security, "decode_token", counting)
    first = verified.decode(token, use="access")
    second = verified.decode(token, use="access")
    assert first == second
    assert (first.subject, first.jti, first.extra) == ("u1", issued.jti, {"k": 1})
    assert calls == [token]  # the signature was checked once


def test_verified_tokens_still_refuse_expiry_other_uses_and_tampering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verified = VerifiedTokens("s" * 32)
    token, issued = encode_token("s" * 32, subject="u1", use="access", ttl_s=60)
    verified.decode(token, use="access")
    with pytest.raises(InvalidToken) as wrong_use:
        verified.decode(token, use="refresh")
    assert wrong_use.value.reason == "invalid"
    header, payload, signature = token.split(".")
    forged = (
        f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    )
    with pytest.raises(InvalidToken):
        verified.decode(forged, use="access")
    # Time passes beyond the token's expiry: the cached claims are refused as expired.
    later = issued.expires_at.timestamp() + 1
    monkeypatch.setattr(security.time, "time", lambda: later)
    with pytest.raises(InvalidToken) as expired:
        verified.decode(token, use="access")
    assert expired.value.reason == "expired"


def test_verified_tokens_are_bounded() -> None:
    verified = VerifiedTokens("s" * 32, max_entries=3)
    tokens = [encode_token("s" * 32, subject=f"u{i}", use="access", ttl_s=60)[0] for i in range(5)]
    for token in tokens:
        verified.decode(token, use="access")
    assert len(verified._claims) == 3
    assert list(verified._claims) == tokens[2:]
