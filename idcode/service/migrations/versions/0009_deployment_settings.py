"""deployment_settings: the crypto profile the data was written under (issue 16: lookup
hashes, subject keys and ciphertexts depend on it; docs/crypto-profiles.md)

A database that already holds cards was written under the standard profile, the only one
that encrypted personal data before this revision: it is recorded as such. An empty one
records the profile of the first service that starts on it.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    settings = op.create_table(
        "deployment_settings",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    has_cards = op.get_bind().execute(sa.text("SELECT 1 FROM cards LIMIT 1")).first()
    if has_cards is not None:
        op.bulk_insert(settings, [{"name": "crypto_profile", "value": "standard"}])


def downgrade() -> None:
    op.drop_table("deployment_settings")
