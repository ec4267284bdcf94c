"""Settings: environment variables read once, on first use, into one frozen object.

Nothing here runs at import time, so a cold start pays only for the settings an
invocation actually touches. Tests change the environment and call
``reset_settings()``.
"""

import os
from dataclasses import dataclass
from functools import lru_cache


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    stage: str
    database_url: str | None
    db_secret_arn: str | None
    db_host: str | None
    db_port: int
    db_name: str
    db_app_role: str | None
    statement_timeout_ms: int
    connect_timeout_s: int


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ.get
    return Settings(
        stage=env("STAGE", "local"),
        database_url=env("DATABASE_URL") or None,
        db_secret_arn=env("DB_SECRET_ARN") or None,
        db_host=env("DB_HOST") or None,
        db_port=int(env("DB_PORT", "5432")),
        db_name=env("DB_NAME", "billing"),
        # An empty DB_APP_ROLE keeps the login role: only for a DATABASE_URL
        # that already logs in as a non-owner role.
        db_app_role=env("DB_APP_ROLE", "billing_app") or None,
        statement_timeout_ms=int(env("DB_STATEMENT_TIMEOUT_MS", "8000")),
        connect_timeout_s=int(env("DB_CONNECT_TIMEOUT_S", "5")),
    )


def reset_settings() -> None:
    get_settings.cache_clear()
