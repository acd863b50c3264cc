"""The Mailchimp tags a member carries follow the membership: tier, active, alumni."""

from __future__ import annotations

from schemas.settings import Settings
from schemas.tables import Membership
from tasks.member_sync import mailchimp_tags


def test_active_patron_carries_member_active_and_only_the_patron_tier(
    pg_settings: Settings,
) -> None:
    tags = mailchimp_tags(Membership(status="active", tier="patron"), pg_settings)

    assert tags == {"member": True, "patron": True, "active": True, "alumni": False}


def test_ended_membership_turns_active_off_and_alumni_on(pg_settings: Settings) -> None:
    tags = mailchimp_tags(Membership(status="canceled", tier="member"), pg_settings)

    assert (tags["active"], tags["alumni"], tags["member"]) == (False, True, True)


def test_past_due_and_scheduled_cancellation_are_still_active(pg_settings: Settings) -> None:
    for status in ("past_due", "cancel_scheduled"):
        assert mailchimp_tags(Membership(status=status, tier="member"), pg_settings)["active"]
