"""terminals: the trust version a terminal holds and its journal backlog, as it reports them
at sync and upload (issue 15: the fleet's metrics, docs/operations.md)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("trust_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("journal_backlog", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("journal_backlog")
        batch.drop_column("trust_version")
