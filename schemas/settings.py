"""The one typed settings object, read from the environment and `.env` with the ecosystem's names."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from celery.schedules import crontab
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///hookfleet.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# How users paste a database URL -> the SQLAlchemy driver we run it on.
_SYNC_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}
_ASYNC_DRIVERS = {"postgresql+psycopg": "postgresql+psycopg", "sqlite": "sqlite+aiosqlite"}

SecretList = Annotated[tuple[SecretStr, ...], NoDecode]

# A job schedule is a 5-field cron expression ("0 9,21 * * *": minute hour day-of-month month
# day-of-week, UTC), or "every <N>s|m|h" for an interval (seconds are for tests and demos).
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h)$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_schedule(expression: str) -> crontab | timedelta:
    """A schedule setting as celery beat takes it; ValueError naming the problem when it is neither
    a 5-field cron expression nor `every <N>s|m|h`."""
    text = expression.strip()
    every = _EVERY.match(text)
    if every:
        seconds = float(every.group(1)) * _UNIT_SECONDS[every.group(2).lower()]
        if seconds <= 0:
            raise ValueError(f"schedule {expression!r}: the interval must be positive")
        return timedelta(seconds=seconds)
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {expression!r} is neither a 5-field cron expression "
            '("minute hour day-of-month month day-of-week", e.g. "0 9,21 * * *") nor "every <N>s|m|h"'
        )
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except ValueError as exc:
        raise ValueError(f"schedule {expression!r} is not a valid cron expression: {exc}") from exc


def normalize_database_url(url: str) -> str:
    """Map `postgres://`, `postgresql://` and `sqlite:///` to the drivers we ship (psycopg 3, sqlite3)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"DATABASE_URL has no scheme: {url.split('@')[-1]!r}")
    driver = _SYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"DATABASE_URL scheme {scheme!r} is not supported; use postgresql://... or sqlite:///..."
        )
    return f"{driver}://{rest}"


def _split_secrets(value: Any) -> Any:
    """Several secrets may be active at once (rotation): comma-separated in one variable."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Read once at each entry point (gateway, worker, CLI) and passed down explicitly."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a rejected URL may carry a password
    )

    # URLs may hold passwords, so they stay out of repr() (secrets are SecretStr).
    database_url: str = Field(default=DEFAULT_DATABASE_URL, repr=False)
    redis_url: str = Field(default=DEFAULT_REDIS_URL, repr=False)
    # CELERY_BROKER_URL, for a broker other than REDIS_URL (RabbitMQ, say).
    broker_url: str | None = Field(default=None, validation_alias="CELERY_BROKER_URL", repr=False)

    stripe_secret_key: SecretStr | None = None
    # Inbound webhook secrets, one variable per provider as DESIGN.md names them; each may hold
    # several comma-separated values while a secret is rotated. Unset: that route answers 404.
    stripe_webhook_secret: SecretList = ()
    clerk_webhook_signing_secret: SecretList = ()
    slack_signing_secret: SecretList = ()
    twilio_auth_token: SecretList = ()
    sendgrid_webhook_public_key: SecretList = ()
    calcom_webhook_secret: SecretList = ()
    daily_webhook_secret: SecretList = ()
    airtable_webhook_mac_secret: SecretList = ()
    quickbooks_webhook_verifier_token: SecretList = ()
    mailchimp_webhook_secret: SecretList = ()
    instantly_webhook_secret: SecretList = ()
    zapier_webhook_secret: SecretList = ()
    luma_webhook_secret: SecretList = ()
    # How far a signed timestamp may be from our clock, either way.
    webhook_tolerance_seconds: int = 300
    # Behind a proxy: trust X-Forwarded-Proto/Host to rebuild the URL a provider signed (Twilio).
    trust_forwarded_headers: bool = False
    stripe_api_base: str = "https://api.stripe.com"
    # Stripe price id -> membership tier, e.g. {"price_123": "member", "price_456": "patron"}.
    stripe_price_tiers: dict[str, str] = Field(default_factory=dict)
    default_tier: str = "member"

    # Outbound provider APIs; each base URL can point at the provider sandbox.
    mailchimp_api_key: SecretStr | None = None
    mailchimp_api_base: str | None = (
        None  # default: https://<dc>.api.mailchimp.com/3.0 from the key
    )
    mailchimp_list_id: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_base: str = "https://api.sendgrid.com"
    sendgrid_from_email: str = "hello@example.com"
    sendgrid_welcome_template_id: str | None = None
    sendgrid_payment_failed_template_id: str | None = None
    airtable_api_key: SecretStr | None = None
    airtable_api_base: str = "https://api.airtable.com"
    slack_bot_token: SecretStr | None = None
    slack_api_base: str = "https://slack.com/api/"
    slack_operators_channel: str = "#hookfleet-ops"
    luma_api_key: SecretStr | None = None
    luma_api_base: str = "https://public-api.luma.com"

    # Scheduled jobs (workers.jobs): when beat starts them (see parse_schedule), and POST /jobs/{name}
    # with `Authorization: Bearer <CRON_SECRET>` for an external cron (unset: that route answers 404).
    luma_approval_schedule: str = "0 9,21 * * *"
    slack_sync_schedule: str = "0 9,21 * * *"
    cron_secret: SecretStr | None = None
    # Guests pending approval who are not active members: declined at Luma, or left pending.
    luma_non_member_action: Literal["decline", "skip"] = "decline"
    # Luma sends the guest its approval/decline email when this is set.
    luma_send_status_email: bool = True
    # Members not found in users.list are looked up one by one with users.lookupByEmail.
    slack_sync_lookup_fallback: bool = False
    # The providers' documented limits, shared by every worker process through Redis.
    luma_requests_per_minute: float = Field(default=200.0, gt=0)
    slack_tier2_per_minute: float = Field(default=20.0, gt=0)
    slack_tier3_per_minute: float = Field(default=50.0, gt=0)
    # Inside one run: tries of one provider call on 5xx / connection errors, and on 429s.
    job_call_attempts: int = Field(default=5, ge=1)
    job_rate_limited_attempts: int = Field(default=10, ge=1)
    # A running job holds its lock this long past its last heartbeat (a dead worker frees it then).
    job_lock_ttl_seconds: int = Field(default=60, ge=3)
    # RedBeat: keys under this prefix, and how long the active beat's lock outlives a silent beat.
    redbeat_key_prefix: str = "hookfleet:redbeat:"
    beat_lock_timeout_seconds: int = Field(default=60, ge=2)

    max_body_bytes: int = 256 * 1024
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    flower_port: int = 5555
    # Flower, under the names Flower itself reads (FLOWER_*). FLOWER_BASIC_AUTH is "user:password"
    # (several comma-separated); unset, `make run` makes one for the run and deploy/ will not start.
    flower_basic_auth: SecretStr | None = None
    flower_address: str = "127.0.0.1"
    # Its task history: kept across restarts in this file (default: the run's state directory) ...
    flower_db: str | None = None
    # ... and bounded to this many tasks, oldest dropped first.
    flower_max_tasks: int = Field(default=10_000, ge=100)
    # Workers' own /metrics (prometheus-client multiprocess; celery-exporter's default port).
    worker_metrics_port: int = 9808
    worker_metrics_address: str = "127.0.0.1"
    sandbox_port: int = 8765
    public_base_url: str = "http://127.0.0.1:8000"

    # Redis visibility timeout must outlive the longest task hard time limit (see workers.queues).
    task_default_time_limit: int = 300
    broker_visibility_timeout: int = 3600
    # How often workers look for messages whose worker died (kombu scans every interval x throttle).
    broker_unacked_restore_interval: int = 10
    broker_unacked_restore_throttle: int = 10
    enqueue_timeout_seconds: float = 2.0

    # Retries after the first attempt, then a dead letter (the seed platform's runbook says 3).
    task_max_retries: int = 3
    retry_backoff_seconds: float = 2.0  # first delay; doubles each retry, with full jitter
    retry_backoff_max_seconds: float = 600.0
    # Dead letters inside this window are summed up in one operators' alert.
    alert_window_seconds: float = 30.0

    # Inbox sweep: `received` rows older than this were never published (broker down) ...
    inbox_sweep_every_seconds: float = 60.0
    # Memberships whose paid period has ended are cancelled by a sweep this often.
    deactivation_sweep_every_seconds: float = 180.0
    inbox_received_stale_seconds: float = 60.0
    # ... and `enqueued`/`dispatched` rows older than this lost their message with the broker.
    inbox_enqueued_stale_seconds: float = 900.0

    api_key_default_rate_per_minute: int = 120
    # The operators' pages (/admin): the key signing their session cookie (unset: a random one per
    # gateway process, so sessions end at a restart and several processes cannot share them), how long
    # a sign-in lasts, and sign-in attempts allowed per client address per minute.
    admin_session_secret: SecretStr | None = None
    admin_session_max_age_seconds: int = Field(default=8 * 3600, ge=60)
    admin_sign_in_per_minute: int = Field(default=10, ge=1)

    log_level: str = "INFO"
    log_json: bool | None = None

    @field_validator(
        "stripe_webhook_secret",
        "clerk_webhook_signing_secret",
        "slack_signing_secret",
        "twilio_auth_token",
        "sendgrid_webhook_public_key",
        "calcom_webhook_secret",
        "daily_webhook_secret",
        "airtable_webhook_mac_secret",
        "quickbooks_webhook_verifier_token",
        "mailchimp_webhook_secret",
        "instantly_webhook_secret",
        "zapier_webhook_secret",
        "luma_webhook_secret",
        mode="before",
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_secrets(value)

    @field_validator("luma_approval_schedule", "slack_sync_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("broker_visibility_timeout")
    @classmethod
    def _visibility_outlives_tasks(cls, value: int, info: Any) -> int:
        limit = info.data.get("task_default_time_limit", 0)
        if value <= limit:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT ({value}s) must exceed TASK_DEFAULT_TIME_LIMIT ({limit}s)"
            )
        return value

    @property
    def async_database_url(self) -> str:
        """The same database through the async driver the gateway uses."""
        scheme, _, rest = self.database_url.partition("://")
        return f"{_ASYNC_DRIVERS[scheme]}://{rest}"

    @property
    def job_time_limit(self) -> int:
        """A scheduled job's hard limit: most of the visibility timeout, so Redis never hands a
        running job to a second worker."""
        return max(1, int(self.broker_visibility_timeout * 0.9))

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
