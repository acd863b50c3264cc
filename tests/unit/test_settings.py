"""Settings: database URL normalisation, secret lists, provider switches, refusal of unsafe values.

Built from literal keyword values with `_env_file=None`; the environment is touched only through
monkeypatch (restored after each test) where environment parsing itself is under test.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from schemas.settings import Settings

WEBHOOK_SECRET = "whsec_unit_repr_Vb7Qe2Nx9Lc4Tz6Pm1Rk"
API_KEY = "sk_test_unit_repr_Hs3Wd8Yj5Fa0Gu2Xo7Ci"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets reach Settings, whatever the shell running pytest exports."""
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_TIERS",
        "TASK_DEFAULT_TIME_LIMIT",
        "BROKER_VISIBILITY_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@h:5432/db",
        "postgresql://u:p@h:5432/db",
        "postgresql+psycopg2://u:p@h:5432/db",
        "postgresql+psycopg://u:p@h:5432/db",
        "POSTGRES://u:p@h:5432/db",
    ],
)
def test_postgres_database_url_runs_on_psycopg3(url: str) -> None:
    settings = Settings(_env_file=None, database_url=url)
    assert settings.database_url == "postgresql+psycopg://u:p@h:5432/db"
    assert settings.async_database_url == "postgresql+psycopg://u:p@h:5432/db"
    assert not settings.is_sqlite


def test_sqlite_database_url_stays_sqlite_and_async_uses_aiosqlite() -> None:
    settings = Settings(_env_file=None, database_url="sqlite:///x.db")
    assert settings.database_url == "sqlite:///x.db"
    assert settings.async_database_url == "sqlite+aiosqlite:///x.db"
    assert settings.is_sqlite


def test_default_database_is_sqlite() -> None:
    settings = Settings(_env_file=None)
    assert settings.is_sqlite
    assert settings.async_database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h:3306/db", "mongodb://h/db", "localhost:5432/db", "/var/lib/hookfleet.db"],
)
def test_unsupported_database_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(_env_file=None, database_url=url)


def test_unsupported_database_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, database_url="mysql://u:pw_in_error_81f3@h/db")
    assert "pw_in_error_81f3" not in str(caught.value)


def test_database_url_is_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@h:5432/db")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql+psycopg://u:p@h:5432/db"


def test_comma_separated_webhook_secrets_from_environment_give_two_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")
    settings = Settings(_env_file=None)
    secrets = settings.stripe_webhook_secret
    assert [secret.get_secret_value() for secret in secrets] == ["whsec_a", "whsec_b"]


@pytest.mark.parametrize(
    "variable",
    [
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "SLACK_SIGNING_SECRET",
        "TWILIO_AUTH_TOKEN",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        "CALCOM_WEBHOOK_SECRET",
        "DAILY_WEBHOOK_SECRET",
        "AIRTABLE_WEBHOOK_MAC_SECRET",
        "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN",
        "MAILCHIMP_WEBHOOK_SECRET",
        "INSTANTLY_WEBHOOK_SECRET",
        "ZAPIER_WEBHOOK_SECRET",
        "LUMA_WEBHOOK_SECRET",
    ],
)
def test_every_provider_secret_is_read_under_its_own_name_and_rotates(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "first,second")
    settings = Settings(_env_file=None)
    secrets = getattr(settings, variable.lower())
    assert [secret.get_secret_value() for secret in secrets] == ["first", "second"]


@pytest.mark.parametrize("value", ["", " ", " , "])
def test_empty_webhook_secret_disables_stripe(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", value)
    settings = Settings(_env_file=None)
    assert settings.stripe_webhook_secret == ()


def test_unset_webhook_secret_disables_stripe() -> None:
    assert Settings(_env_file=None).stripe_webhook_secret == ()


def test_price_tiers_json_from_environment_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_PRICE_TIERS", '{"price_123": "member", "price_456": "patron"}')
    settings = Settings(_env_file=None)
    assert settings.stripe_price_tiers == {"price_123": "member", "price_456": "patron"}


def test_price_tiers_that_are_not_json_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_PRICE_TIERS", "price_123=member")
    with pytest.raises(SettingsError, match="stripe_price_tiers"):
        Settings(_env_file=None)


def test_secrets_never_appear_in_repr_or_str() -> None:
    settings = Settings(
        _env_file=None,
        stripe_secret_key=SecretStr(API_KEY),
        stripe_webhook_secret=(SecretStr(WEBHOOK_SECRET), SecretStr(WEBHOOK_SECRET + "_old")),
    )
    for text in (repr(settings), str(settings)):
        assert WEBHOOK_SECRET not in text
        assert API_KEY not in text


def test_secrets_from_environment_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{WEBHOOK_SECRET},{WEBHOOK_SECRET}_old")
    monkeypatch.setenv("STRIPE_SECRET_KEY", API_KEY)
    settings = Settings(_env_file=None)
    assert WEBHOOK_SECRET not in repr(settings)
    assert API_KEY not in repr(settings)


def test_url_passwords_never_appear_in_repr() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql://u:db_pw_5e1c@h:5432/db",
        redis_url="redis://:redis_pw_7a2d@h:6379/0",
        broker_url="amqp://u:amqp_pw_3b9f@h:5672//",
    )
    text = repr(settings)
    assert "db_pw_5e1c" not in text
    assert "redis_pw_7a2d" not in text
    assert "amqp_pw_3b9f" not in text


@pytest.mark.parametrize("visibility", [299, 300])
def test_visibility_timeout_not_above_task_time_limit_is_refused(visibility: int) -> None:
    with pytest.raises(ValidationError, match="BROKER_VISIBILITY_TIMEOUT"):
        Settings(
            _env_file=None,
            task_default_time_limit=300,
            broker_visibility_timeout=visibility,
        )


def test_visibility_timeout_above_task_time_limit_is_accepted() -> None:
    settings = Settings(
        _env_file=None,
        task_default_time_limit=300,
        broker_visibility_timeout=301,
    )
    assert settings.broker_visibility_timeout == 301


def test_visibility_timeout_below_task_time_limit_from_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASK_DEFAULT_TIME_LIMIT", "7200")
    with pytest.raises(ValidationError, match="BROKER_VISIBILITY_TIMEOUT"):
        Settings(_env_file=None)


def test_broker_defaults_to_redis_url() -> None:
    settings = Settings(_env_file=None, redis_url="redis://h:6379/2")
    assert settings.celery_broker_url == "redis://h:6379/2"


def test_celery_broker_url_from_environment_overrides_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@h:5672//")
    settings = Settings(_env_file=None, redis_url="redis://h:6379/2")
    assert settings.celery_broker_url == "amqp://guest@h:5672//"


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ValidationError):
        settings.default_tier = "patron"  # type: ignore[misc]
