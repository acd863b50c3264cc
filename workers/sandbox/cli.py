"""`sandbox serve`: the provider sandbox under uvicorn (also runnable as `python -m workers.sandbox.cli`)."""

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


if __name__ == "__main__":
    sandbox()
