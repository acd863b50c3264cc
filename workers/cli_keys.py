"""`hookfleet keys`: create, list and revoke the admin API's keys."""

from __future__ import annotations

import click

from schemas.db import session_scope
from workers import api_keys
from workers.cli_context import cli_actor, cli_sessions


@click.group("keys")
def keys() -> None:
    """API keys for the admin API (/admin/api)."""


@keys.command("create")
@click.option("--name", required=True, help="who or what uses the key, unique")
@click.option(
    "--scopes",
    required=True,
    help=f"comma-separated, from: {', '.join(api_keys.SCOPES)}",
)
@click.option(
    "--rate-per-minute",
    type=click.IntRange(min=1),
    default=None,
    help="requests per minute (default: API_KEY_DEFAULT_RATE_PER_MINUTE)",
)
def create(name: str, scopes: str, rate_per_minute: int | None) -> None:
    """Create a key and print it once."""
    try:
        with cli_sessions() as (settings, sessions), session_scope(sessions) as session:
            rate = rate_per_minute or settings.api_key_default_rate_per_minute
            row, plaintext = api_keys.create_key(
                session, name=name, scopes=scopes, rate_per_minute=rate, actor=cli_actor()
            )
            granted = ", ".join(row.scopes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"created API key {name!r} (scopes: {granted}; {rate} requests/minute)")
    click.echo(plaintext)
    click.secho(
        "Store it now: it is kept only as a hash and will not be shown again.",
        fg="yellow",
        err=True,
    )


@keys.command("list")
def list_() -> None:
    """Every key with its prefix, scopes, rate, and when it was last used or revoked."""
    with cli_sessions() as (_, sessions), session_scope(sessions) as session:
        rows = api_keys.list_keys(session)
        lines = [
            "\t".join(
                (
                    row.name,
                    row.prefix,
                    ",".join(row.scopes),
                    f"{row.rate_per_minute}/min",
                    f"created {row.created_at:%Y-%m-%d %H:%M}",
                    f"last used {row.last_used_at:%Y-%m-%d %H:%M}"
                    if row.last_used_at
                    else "never used",
                    f"REVOKED {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active",
                )
            )
            for row in rows
        ]
    if not lines:
        click.echo("no API keys; create one with `hookfleet keys create --name N --scopes ...`")
    for line in lines:
        click.echo(line)


@keys.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the key NAME; it stops working at once (its row stays for the audit trail)."""
    try:
        with cli_sessions() as (_, sessions), session_scope(sessions) as session:
            api_keys.revoke(session, name, actor=cli_actor())
    except (api_keys.ApiKeyNotFoundError, api_keys.ApiKeyStateError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked API key {name!r}")
