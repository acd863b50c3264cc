"""Typed views of the Clerk (Svix) events hookfleet acts on: users created, updated and deleted.

Shapes follow Clerk's webhook event catalog (`user.created` carries the full User object; a deleted
user arrives as `{"id", "object": "user", "deleted": true}`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ClerkEvent(_Shape):
    type: str
    object: str = "event"
    timestamp: int | None = None  # milliseconds
    data: dict[str, Any]


class EmailAddress(_Shape):
    id: str
    email_address: str


class ClerkUser(_Shape):
    id: str
    email_addresses: list[EmailAddress] = Field(default_factory=list)
    primary_email_address_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    updated_at: int | None = None  # milliseconds; the same change delivered twice carries the same
    deleted: bool = False

    @property
    def primary_email(self) -> str | None:
        """The primary address, lower-cased; the first one when Clerk names none."""
        for address in self.email_addresses:
            if address.id == self.primary_email_address_id:
                return address.email_address.strip().lower()
        first = self.email_addresses[0].email_address if self.email_addresses else None
        return first.strip().lower() if first else None

    @property
    def name(self) -> str | None:
        full = " ".join(part for part in (self.first_name, self.last_name) if part)
        return full or None
