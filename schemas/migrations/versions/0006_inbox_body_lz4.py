"""inbox bodies compressed with lz4

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 17:50:00

A webhook body of 2-3 KB is over PostgreSQL's TOAST threshold, so each one is compressed as it is
inserted. pglz, the default, took 170-200 us of PostgreSQL's CPU per single-row insert of a Stripe
event; lz4 took 147-157 us (rows about 20% larger). A server built without lz4 keeps pglz.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        DO $$
        BEGIN
            ALTER TABLE webhook_events ALTER COLUMN body SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported THEN
            RAISE NOTICE 'lz4 is not built into this server: inbox bodies stay pglz';
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE webhook_events ALTER COLUMN body SET COMPRESSION pglz")
