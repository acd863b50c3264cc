"""Authenticate a test delivery the way a Mailchimp webhook is set up: Mailchimp signs nothing.

The only credential Mailchimp can carry is what we put in the callback URL, so the token goes in the
query string (`?token=`); `Authorization: Bearer` is the other form the gateway accepts.
https://mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/
"""

from __future__ import annotations

FORM = "application/x-www-form-urlencoded"


def sign_mailchimp(token: str, *, as_header: bool = False) -> dict[str, str]:
    """Headers of a Mailchimp POST; with `as_header` the token travels as a Bearer header (else pass
    `mailchimp_params(token)` as the query)."""
    headers = {"Content-Type": FORM, "User-Agent": "MailChimp.com WebHook Validator"}
    if as_header:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def mailchimp_params(token: str) -> dict[str, str]:
    """The query string of the callback URL configured in Mailchimp."""
    return {"token": token}
