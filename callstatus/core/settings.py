"""The one settings object: environment variables and `.env`, validated once at start."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Beyond loopback the dashboard's password is all that guards callers' numbers; failed logins
# are limited to 10 a minute per address, so 12 random characters outlast any guessing.
MIN_PASSWORD_LENGTH = 12
# CALLSTATUS_NUMBER_KEY keys the HMAC of masked numbers: a short key could be found by trying
# every key against one known number, and then every pseudonym could be reversed by enumeration.
MIN_NUMBER_KEY_LENGTH = 16


class SettingsError(ValueError):
    """A setting, or a combination of settings, that callstatus refuses to start with."""


def _split_csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    plivo_auth_token: str | None = Field(default=None, alias="PLIVO_AUTH_TOKEN")
    public_base_url: str | None = Field(default=None, alias="PUBLIC_BASE_URL")
    db: Path = Field(default=Path("data/callstatus.duckdb"), alias="CALLSTATUS_DB")
    dial_numbers_raw: str | None = Field(default=None, alias="DIAL_NUMBERS")
    dial_timeout: int | None = Field(default=None, alias="DIAL_TIMEOUT", ge=1, le=3600)
    dial_caller_id: str | None = Field(default=None, alias="DIAL_CALLER_ID")
    answer_speak_text: str = Field(default="Connecting your call", alias="ANSWER_SPEAK_TEXT")
    plivo_timezone: str = Field(default="UTC", alias="PLIVO_TIMEZONE")
    dashboard_password: str | None = Field(default=None, alias="DASHBOARD_PASSWORD")
    # DuckDB's own default is 80% of RAM: a snapshot copy of a large file then takes gigabytes.
    # The copy fills DuckDB's buffer pool up to this limit with cached pages, and the server's
    # peak during it is about the limit plus 400 MiB (Python, Streamlit, DuckDB's own): 512MB
    # keeps it near 900 MiB, and the dashboard's queries at 2 million calls run as fast as at 640MB.
    memory_limit: str = Field(default="512MB", alias="CALLSTATUS_MEMORY_LIMIT")
    snapshot_interval_s: float = Field(
        default=60.0, alias="CALLSTATUS_SNAPSHOT_INTERVAL", ge=1, le=86400
    )
    # Connection hygiene on the receiver's port (receiver/protocol.py).
    request_timeout_s: float = Field(
        default=30.0, alias="CALLSTATUS_REQUEST_TIMEOUT", ge=0.5, le=3600
    )
    keepalive_timeout_s: float = Field(
        default=15.0, alias="CALLSTATUS_KEEPALIVE_TIMEOUT", ge=1, le=3600
    )
    max_connections: int = Field(
        default=2000, alias="CALLSTATUS_MAX_CONNECTIONS", ge=10, le=1_000_000
    )
    # PHLO reports on /plivo/phlo: the shared secret their HTTP Request component sends.
    phlo_secret: str | None = Field(default=None, alias="PHLO_SECRET")
    # Bearer tokens accepted on /api/ besides DASHBOARD_PASSWORD (machine clients).
    api_tokens_raw: str | None = Field(default=None, alias="CALLSTATUS_API_TOKENS")
    # Alerts and scheduled reports (callstatus/alerts): the rules file, how often it is evaluated,
    # where messages' links point, and the SMTP server of email channels.
    alerts_file: Path | None = Field(default=None, alias="CALLSTATUS_ALERTS")
    alert_interval_s: float = Field(default=60.0, alias="CALLSTATUS_ALERT_INTERVAL", ge=1, le=86400)
    dashboard_url: str | None = Field(default=None, alias="CALLSTATUS_DASHBOARD_URL")
    smtp_host: str | None = Field(default=None, alias="SMTP_HOST")
    smtp_port: int = Field(default=587, alias="SMTP_PORT", ge=1, le=65535)
    smtp_user: str | None = Field(default=None, alias="SMTP_USER")
    smtp_password: str | None = Field(default=None, alias="SMTP_PASSWORD")
    smtp_from: str | None = Field(default=None, alias="SMTP_FROM")
    smtp_starttls: bool = Field(default=True, alias="SMTP_STARTTLS")
    # Plivo's Call API, for reconciliation with its call records (callstatus/reconcile).
    plivo_auth_id: str | None = Field(default=None, alias="PLIVO_AUTH_ID")
    plivo_api_token: str | None = Field(default=None, alias="PLIVO_API_TOKEN")
    plivo_api_url: str = Field(default="https://api.plivo.com", alias="PLIVO_API_URL")
    reconcile_interval_s: float = Field(
        default=600.0, alias="CALLSTATUS_RECONCILE_INTERVAL", ge=0, le=7 * 86400
    )
    reconcile_grace_s: float = Field(
        default=300.0, alias="CALLSTATUS_RECONCILE_GRACE", ge=0, le=86400
    )

    # Clustered mode (docs/deploy.md): webhooks stored in PostgreSQL by any number of
    # `serve --role receiver` processes; `--role dashboard` keeps CALLSTATUS_DB as a replica.
    postgres_url: str | None = Field(default=None, alias="CALLSTATUS_POSTGRES_URL")
    # Personal data (docs/privacy.md): numbers in clear or as keyed pseudonyms, and retention.
    numbers: Literal["clear", "masked"] = Field(default="clear", alias="CALLSTATUS_NUMBERS")
    number_key: str | None = Field(default=None, alias="CALLSTATUS_NUMBER_KEY", repr=False)
    own_numbers_raw: str | None = Field(default=None, alias="CALLSTATUS_OWN_NUMBERS")
    retention_days: int | None = Field(
        default=None, alias="CALLSTATUS_RETENTION_DAYS", ge=1, le=36500
    )
    aggregate_retention_days: int | None = Field(
        default=None, alias="CALLSTATUS_AGGREGATE_RETENTION_DAYS", ge=1, le=36500
    )
    archive_dir: Path | None = Field(default=None, alias="CALLSTATUS_ARCHIVE_DIR")
    # The length of retention's day in seconds: its horizons and the pause between its runs.
    # Only tests and bench/retention.py change it, to run many simulated days through one server.
    retention_day_s: float = Field(
        default=86400.0, alias="CALLSTATUS_RETENTION_DAY_SECONDS", ge=0.5, le=86400.0
    )

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not _valid_host(parts):
            raise ValueError(
                f"PUBLIC_BASE_URL must be an absolute http(s) URL such as "
                f"https://calls.example.com, got {value!r}"
            )
        # A bare "?" or "#" too: the receiver appends paths to this URL to rebuild the signed one.
        if "?" in value or "#" in value:
            raise ValueError("PUBLIC_BASE_URL must not carry a query string or a fragment")
        return value.strip().rstrip("/")

    @field_validator("dashboard_url")
    @classmethod
    def _check_dashboard_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not _valid_host(parts):
            raise ValueError(
                f"CALLSTATUS_DASHBOARD_URL must be an absolute http(s) URL, got {value!r}"
            )
        return value.strip().rstrip("/")

    @field_validator("plivo_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not _valid_host(parts):
            raise ValueError(
                f"PLIVO_API_URL must be an absolute http(s) URL such as https://api.plivo.com, "
                f"got {value!r}"
            )
        return value.strip().rstrip("/")

    @field_validator("memory_limit")
    @classmethod
    def _check_memory_limit(cls, value: str) -> str:
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", value, re.I):
            raise ValueError(f"CALLSTATUS_MEMORY_LIMIT must look like 640MB or 2GB, got {value!r}")
        return value.strip()

    @field_validator("plivo_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"PLIVO_TIMEZONE must be an IANA zone such as UTC or Asia/Kolkata, got {value!r}"
            ) from exc
        return value

    @field_validator("postgres_url")
    @classmethod
    def _check_postgres_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("postgresql", "postgres") or not (
            parts.hostname or "host=" in parts.query
        ):
            # The URL may hold a password: name the shape, never echo the value.
            raise ValueError(
                "CALLSTATUS_POSTGRES_URL must be a postgresql:// URL such as "
                "postgresql://callstatus:PASSWORD@db.example.com:5432/callstatus"
            )
        return value.strip()

    @field_validator("numbers", mode="before")
    @classmethod
    def _lower_numbers(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("archive_dir", mode="before")
    @classmethod
    def _empty_dir_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("retention_days", "aggregate_retention_days", mode="before")
    @classmethod
    def _empty_days_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_personal_data(self) -> Settings:
        if self.numbers == "masked":
            key = (self.number_key or "").strip()
            if len(key) < MIN_NUMBER_KEY_LENGTH:
                raise ValueError(
                    "CALLSTATUS_NUMBERS=masked needs CALLSTATUS_NUMBER_KEY of at least "
                    f"{MIN_NUMBER_KEY_LENGTH} characters (keep it secret and never change it: "
                    "pseudonyms of the same number must stay equal), for example the output of "
                    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
        if (
            self.retention_days is not None
            and self.aggregate_retention_days is not None
            and self.aggregate_retention_days < self.retention_days
        ):
            raise ValueError(
                "CALLSTATUS_AGGREGATE_RETENTION_DAYS must be at least CALLSTATUS_RETENTION_DAYS "
                f"({self.aggregate_retention_days} < {self.retention_days}): the aggregates are "
                "what long ranges are drawn from once raw rows are gone"
            )
        return self

    @field_validator(
        "plivo_auth_token",
        "dashboard_password",
        "dial_caller_id",
        "plivo_auth_id",
        "plivo_api_token",
    )
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def auth_tokens(self) -> list[str]:
        return _split_csv(self.plivo_auth_token)

    @property
    def api_tokens(self) -> list[str]:
        """CALLSTATUS_API_TOKENS: Bearer tokens for /api/, comma-separated."""
        return _split_csv(self.api_tokens_raw)

    @property
    def call_api_token(self) -> str | None:
        """The Call API's token: PLIVO_API_TOKEN, else the first of PLIVO_AUTH_TOKEN."""
        if self.plivo_api_token:
            return self.plivo_api_token
        tokens = self.auth_tokens
        return tokens[0] if tokens else None

    @property
    def reconcile_configured(self) -> bool:
        """Whether Plivo's Call API can be reached: PLIVO_AUTH_ID and a token are set."""
        return bool(self.plivo_auth_id and self.call_api_token)

    @property
    def dial_numbers(self) -> list[str]:
        return _split_csv(self.dial_numbers_raw)

    @property
    def own_numbers(self) -> list[str]:
        """Numbers that stay in clear when numbers are masked: ours, not callers'."""
        ours = [*self.dial_numbers, *_split_csv(self.own_numbers_raw)]
        if self.dial_caller_id:
            ours.append(self.dial_caller_id)
        return ours

    @property
    def masked(self) -> bool:
        return self.numbers == "masked"

    @property
    def clustered(self) -> bool:
        """Whether webhooks are stored in PostgreSQL (CALLSTATUS_POSTGRES_URL is set)."""
        return self.postgres_url is not None

    @property
    def development_mode(self) -> bool:
        return not self.auth_tokens

    @property
    def spool_dir(self) -> Path:
        return self.db.parent / "spool"

    @property
    def snapshot_path(self) -> Path:
        return self.db.with_name(f"{self.db.stem}-snapshot{self.db.suffix or '.duckdb'}")

    @property
    def alerts_path(self) -> Path | None:
        """CALLSTATUS_ALERTS, else alerts.toml in the working directory when it exists."""
        if self.alerts_file is not None:
            return self.alerts_file
        default = Path("alerts.toml")
        return default if default.is_file() else None

    @property
    def links_base_url(self) -> str | None:
        """Where links in alert messages and reports point: CALLSTATUS_DASHBOARD_URL, else
        PUBLIC_BASE_URL."""
        return (self.dashboard_url or "").rstrip("/") or self.public_base_url

    @property
    def server_file(self) -> Path:
        """Where a running server says how to reach it (commands that write go through it)."""
        return self.db.with_name(self.db.name + ".server.json")

    def check_serving(self, host: str) -> None:
        """Refuse to expose call data or accept unsigned webhooks beyond this machine."""
        if _is_loopback(host):
            return
        missing = []
        if not self.dashboard_password:
            missing.append("DASHBOARD_PASSWORD (the dashboard shows callers' numbers)")
        if self.development_mode:
            missing.append("PLIVO_AUTH_TOKEN (without it anyone can post fake calls)")
        if missing:
            raise SettingsError(
                f"refusing to listen on {host} without " + " and ".join(missing) + ". "
                "Set them, or listen on 127.0.0.1 behind your own proxy."
            )
        length = len(self.dashboard_password or "")
        if length < MIN_PASSWORD_LENGTH:
            raise SettingsError(
                f"refusing to listen on {host} with a {length}-character DASHBOARD_PASSWORD: "
                f"use at least {MIN_PASSWORD_LENGTH} characters, for example the output of "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(16))'`."
            )


def _valid_host(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
    except ValueError:
        return False
    return bool(parts.hostname) and not any(char.isspace() for char in parts.netloc)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
