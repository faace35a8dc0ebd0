from __future__ import annotations

import pytest
from pydantic import ValidationError

from agenthub.core.settings import DEFAULT_SECRET_KEY, Settings


def test_defaults_use_sqlite_in_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/agenthub.db"
    assert settings.is_sqlite
    assert (settings.rate_limit_per_minute, settings.rate_limit_per_hour) == (100, 1000)
    assert settings.rate_limit_per_day == 10000


@pytest.mark.parametrize("secret", [DEFAULT_SECRET_KEY, "short-secret"])
def test_production_refuses_default_or_short_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="AGENTHUB_SECRET_KEY"):
        Settings(env="production", secret_key=secret)


def test_production_accepts_a_long_random_secret() -> None:
    settings = Settings(env="production", secret_key="x" * 48)
    assert settings.env == "production"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTHUB_RATE_LIMIT_PER_MINUTE", "7")
    monkeypatch.setenv("AGENTHUB_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    settings = Settings()
    assert settings.rate_limit_per_minute == 7
    assert not settings.is_sqlite


def test_every_field_is_described() -> None:
    undocumented = [n for n, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []
