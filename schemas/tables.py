"""SQLAlchemy tables: the inbox, members and memberships, audit, dead letters and job runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# BIGINT ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: Json,
        list[Any]: Json,
        list[str]: Json,
    }


class InboxStatus:
    """Where a stored webhook is on its path; the sweep of #3 looks at `received` and `enqueued`."""

    RECEIVED = "received"  # committed, not yet handed to the broker
    ENQUEUED = "enqueued"  # process_event published
    DISPATCHED = "dispatched"  # process_event ran and sent the handler tasks
    PROCESSED = "processed"  # every handler finished
    IGNORED = "ignored"  # a valid event type with no handler
    FAILED = "failed"  # a handler was dead-lettered


class WebhookEvent(Base):
    """The inbox: every verified delivery, stored before the gateway acknowledges it."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index(None, "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # Only the headers needed to verify the body again (signature, timestamp), never auth tokens.
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=InboxStatus.RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    # How many handler tasks dispatch sent; the row is processed when that many have finished.
    handler_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    clerk_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Time of the newest Clerk change applied (Clerk's `updated_at`): older deliveries are stale.
    clerk_synced_at: Mapped[datetime | None]
    # Set when Clerk deleted the user: personal data is gone and never comes back.
    anonymised_at: Mapped[datetime | None]
    visible: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# Luma approval looks members up by lower-cased email, a page of guests at a time.
Index("ix_members_lower_email", func.lower(Member.email))


class Membership(Base):
    """One membership per member; `last_event_at` is the ordering guard against stale Stripe events."""

    __tablename__ = "memberships"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id"), unique=True)
    status: Mapped[str] = mapped_column(String(24))
    tier: Mapped[str | None] = mapped_column(String(64))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64), index=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(64))
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    deactivate_at: Mapped[datetime | None] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    last_event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """Who (a system flow or an operator) did what to which entity, and why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    inbox_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("webhook_events.id"), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(200), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    args: Mapped[list[Any]] = mapped_column(default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queue: Mapped[str | None] = mapped_column(String(64))
    exc_type: Mapped[str] = mapped_column(String(200))
    exc_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    inbox_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("webhook_events.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="dead", index=True)
    replayed_task_id: Mapped[str | None] = mapped_column(String(64))
    replay_of_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("dead_letters.id"))
    discard_reason: Mapped[str | None] = mapped_column(Text)
    # Set when the operators' alert that covers this row has been posted (alerts are batched).
    alerted_at: Mapped[datetime | None]


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64), index=True)
    triggered_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class Effect(Base):
    """A side effect done (or begun) under a key, so a retried, replayed or redelivered task skips it."""

    __tablename__ = "effects"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # started | done
    task_id: Mapped[str | None] = mapped_column(String(64))
    inbox_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("webhook_events.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiKey(Base):
    """An operator's key for the admin API: only its SHA-256 is kept; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    rate_per_minute: Mapped[int] = mapped_column(Integer, default=120)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ZapierSubscription(Base):
    """A Zapier REST-hook subscription: where to POST when a trigger's event happens."""

    __tablename__ = "zapier_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(128), index=True)
    hook_url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class AirtableCursor(Base):
    """How far each Airtable webhook's payloads have been fetched (Airtable's `cursor`)."""

    __tablename__ = "airtable_cursors"

    webhook_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_id: Mapped[str] = mapped_column(String(64))
    cursor: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IntegrationStatus:
    """A member's account at a provider, as the last sync saw it (Slack's statuses in issue 6)."""

    ACTIVE = "active"
    INACTIVE = "inactive"  # Slack: a guest (restricted or ultra-restricted)
    DEACTIVATED = "deactivated"  # Slack: deleted
    NOT_FOUND = "not_found"


class Integration(Base):
    """Per member and provider: the member's id there, its status and when it was last synced."""

    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("member_id", "provider"),
        Index(None, "provider", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("members.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class LumaDecision(Base):
    """One decision per Luma guest, written `started` before the status call and `done` after it,
    so a crash or a retry resends the same decision instead of making a second one. Skips are
    `done` at once and may be revisited on a later run when the membership changed."""

    __tablename__ = "luma_decisions"
    __table_args__ = (UniqueConstraint("event_id", "guest_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    guest_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # approve | decline | skip
    reason: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # started | done | error
    job_run_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("job_runs.id"))
    error: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
