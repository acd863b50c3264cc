"""The `hookfleet` command: database migrations, the local fleet, and the sandbox sender."""

from __future__ import annotations

from typing import Any

import click

from schemas.settings import Settings
from workers.cli_dlq import dlq, events
from workers.cli_jobs import jobs
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
main.add_command(jobs)


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


def _webhook_secrets(settings: Settings) -> dict[str, str]:
    """The secrets the gateway checks: configured ones, else the sandbox's local ones."""
    from workers.sandbox.local_secrets import sandbox_secret

    stripe = settings.stripe_webhook_secret
    clerk = settings.clerk_webhook_signing_secret
    return {
        "stripe": stripe[0].get_secret_value()
        if stripe
        else sandbox_secret("STRIPE_WEBHOOK_SECRET"),
        "clerk": clerk[0].get_secret_value()
        if clerk
        else sandbox_secret("CLERK_WEBHOOK_SIGNING_SECRET"),
    }


@send.command("stripe")
@click.argument("event_type")
@click.option("--email", default="newcomer@example.com", show_default=True)
@click.option("--customer", default=None, help="cus_... (a new one by default)")
@click.option("--subscription", default=None, help="sub_... (a new one by default)")
@click.option("--price", default="price_sandbox_member", show_default=True)
@click.option("--url", default=None, help="the gateway's base URL (default: PUBLIC_BASE_URL)")
def send_stripe(
    event_type: str,
    email: str,
    customer: str | None,
    subscription: str | None,
    price: str,
    url: str | None,
) -> None:
    """Build EVENT_TYPE for one customer, sign it with STRIPE_WEBHOOK_SECRET and POST it."""
    from workers.sandbox.scenarios import Delivery
    from workers.sandbox.stripe_webhooks import build_event

    settings = Settings()
    event = build_event(
        event_type, email=email, customer=customer, subscription=subscription, price=price
    )
    _post(url or settings.public_base_url, [Delivery("stripe", event)], _webhook_secrets(settings))


@send.command("scenario")
@click.argument("name", type=click.Choice(["signup", "cancel", "payment-failed"]))
@click.option("--email", default="newcomer@example.com", show_default=True)
@click.option(
    "--customer", default=None, help="cus_... of an earlier signup (cancel, payment-failed)"
)
@click.option("--subscription", default=None, help="sub_... of an earlier signup")
@click.option("--ends-in", default=120, show_default=True, help="cancel: seconds to period end")
@click.option("--url", default=None, help="the gateway's base URL (default: PUBLIC_BASE_URL)")
def send_scenario(
    name: str,
    email: str,
    customer: str | None,
    subscription: str | None,
    ends_in: int,
    url: str | None,
) -> None:
    """Deliver a realistic Clerk + Stripe sequence: signup, cancel or payment-failed."""
    import time

    from workers.sandbox.scenarios import SCENARIOS, Person

    settings = Settings()
    person = Person.new(email)
    person = Person(
        person.email,
        customer or person.customer,
        subscription or person.subscription,
        person.clerk_user,
    )
    deliveries = SCENARIOS[name](person, int(time.time()), ends_in)
    click.echo(f"{name}: customer={person.customer} subscription={person.subscription}")
    if name == "signup" and settings.stripe_secret_key is None:
        _seed_sandbox_customer(settings, person.customer, person.email)
    _post(url or settings.public_base_url, deliveries, _webhook_secrets(settings))


def _seed_sandbox_customer(settings: Settings, customer: str, email: str) -> None:
    """In sandbox mode, Stripe's side of the checkout: the customer exists for later updates."""
    import httpx

    url = f"http://127.0.0.1:{settings.sandbox_port}/_sandbox/stripe/customers"
    try:
        httpx.post(url, json={"id": customer, "email": email}, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        click.echo(f"(the sandbox at {url} did not take the customer: {exc})", err=True)


def _post(base_url: str, deliveries: list[Any], secrets: dict[str, str]) -> None:
    from workers.sandbox.scenarios import deliver

    failed = False
    for delivery in deliveries:
        response = deliver(base_url, delivery, secrets)
        event = delivery.event
        click.echo(
            f"{delivery.provider} {event['type']} {event.get('id', '')} -> {response.status_code}"
        )
        click.echo(response.text)
        failed = failed or response.status_code >= 300
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
