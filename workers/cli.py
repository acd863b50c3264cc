"""The `hookfleet` command: database migrations, the local fleet, and the sandbox sender."""

from __future__ import annotations

import click

from schemas.settings import Settings
from workers.cli_dlq import dlq, events
from workers.cli_keys import keys
from workers.logging import configure_logging
from workers.sandbox.cli import sandbox


@click.group()
def main() -> None:
    """hookfleet: webhooks in, members' state out, nothing lost."""


main.add_command(dlq)
main.add_command(events)
main.add_command(sandbox)
main.add_command(keys)


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations to DATABASE_URL."""
    from schemas.migrate import upgrade

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    upgrade(settings, revision)
    click.echo(f"database at {settings.database_url.split('@')[-1]} is at {revision}")


@main.command("run")
def run() -> None:
    """Migrate, then run gateway, worker, beat and Flower in the foreground (what `make run` does)."""
    from workers.fleet import run_fleet

    run_fleet()


@main.group()
def send() -> None:
    """Deliver a realistic, signed webhook to the gateway, as the provider would."""


@send.command("stripe")
@click.argument("event_type")
@click.option("--email", default="newcomer@example.com", show_default=True)
@click.option("--customer", default=None, help="cus_... (a new one by default)")
@click.option("--subscription", default=None, help="sub_... (a new one by default)")
@click.option("--price", default="price_sandbox_member", show_default=True)
@click.option("--url", default=None, help="the gateway's Stripe route (default: from settings)")
def send_stripe(
    event_type: str,
    email: str,
    customer: str | None,
    subscription: str | None,
    price: str,
    url: str | None,
) -> None:
    """Build EVENT_TYPE for one customer, sign it with STRIPE_WEBHOOK_SECRET and POST it."""
    from workers.sandbox.local_secrets import sandbox_stripe_secret
    from workers.sandbox.stripe_webhooks import build_event, deliver

    settings = Settings()
    configured = settings.stripe_webhook_secret
    secret = configured[0].get_secret_value() if configured else sandbox_stripe_secret()
    event = build_event(
        event_type, email=email, customer=customer, subscription=subscription, price=price
    )
    target = url or f"{settings.public_base_url.rstrip('/')}/webhooks/stripe"
    response = deliver(target, event, secret)
    customer_id = event["data"]["object"].get("customer")
    click.echo(f"{event['id']} {event_type} customer={customer_id} -> {response.status_code}")
    click.echo(response.text)
    if response.status_code >= 300:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
