"""`sandbox serve`: the provider sandbox under uvicorn (also runnable as `python -m workers.sandbox.cli`);
`sandbox seed`: a made-up community in the database and the sandbox (workers.sandbox.community)."""

from __future__ import annotations

import click

from workers.logging import configure_logging


@click.group()
def sandbox() -> None:
    """The provider sandbox: provider APIs played locally, with injectable faults."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--log-level", default="INFO", show_default=True, envvar="LOG_LEVEL")
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the sandbox until interrupted; point SLACK_API_BASE at http://HOST:PORT/slack/api/."""
    import uvicorn

    from workers.sandbox.server import create_sandbox_app

    configure_logging(log_level)
    click.echo(
        f"provider sandbox on http://{host}:{port} (Slack: /slack/api/, control: /_sandbox/)"
    )
    # log_config=None keeps our structured logging instead of uvicorn's own handlers.
    uvicorn.run(create_sandbox_app(), host=host, port=port, access_log=False, log_config=None)


@sandbox.command("seed")
@click.option("--members", default=1000, show_default=True, type=click.IntRange(min=0))
@click.option("--rsvps", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--events", default=4, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", "seed_value", default=1, show_default=True, type=int)
@click.option(
    "--sandbox-url",
    default="http://127.0.0.1:8765",
    show_default=True,
    envvar="HOOKFLEET_SANDBOX_URL",
    help="The running sandbox to give the Slack users and Luma events.",
)
@click.option("--database/--no-database", default=True, show_default=True)
@click.option("--sandbox/--no-sandbox", "to_sandbox", default=True, show_default=True)
def seed(
    members: int,
    rsvps: int,
    events: int,
    seed_value: int,
    sandbox_url: str,
    database: bool,
    to_sandbox: bool,
) -> None:
    """Seed a made-up community: members in DATABASE_URL, Slack users and Luma events pending
    approval in the running sandbox (the same community every time for one --seed)."""
    import httpx

    from schemas.db import session_scope
    from workers import runtime
    from workers.sandbox.community import build_community, seed_database, seed_sandbox

    try:
        community = build_community(members, rsvps, events, seed=seed_value)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if database:
        with session_scope(runtime.sessions()) as session:
            inserted = seed_database(session, community)
        click.echo(f"database: {inserted} new members ({members - inserted} were there already)")
    if to_sandbox:
        try:
            seeded = seed_sandbox(sandbox_url, community)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"sandbox at {sandbox_url}: {exc}") from exc
        guests = sum(len(event["guests"]) for event in seeded["events"])
        click.echo(
            f"sandbox: {seeded['slack_users']} Slack users, {len(seeded['events'])} Luma events"
            f" with {guests} guests"
        )
    summary = community.summary()
    click.echo(
        "community: "
        + ", ".join(
            f"{key} {value}" for key, value in summary.items() if not isinstance(value, dict)
        )
    )
    for key in ("memberships", "slack", "guests"):
        click.echo(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))


if __name__ == "__main__":
    sandbox()
