from __future__ import annotations

import pytest

from agenthub.core.security import (
    InvalidToken,
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
