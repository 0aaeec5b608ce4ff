"""devices: citizens' device keys, certified for offline device codes (issue 13); a device's
removal is a status change (terminals' deltas carry it)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("card_id", sa.String(length=36), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=33), nullable=False),
        sa.Column("device_id", sa.LargeBinary(length=8), nullable=False),
        sa.Column("label_enc", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credential_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_devices_card_id", "devices", ["card_id"])
    # Over every row, removed ones too: a removed key is never registered again (docs/devices.md).
    op.create_index("ix_devices_device_id", "devices", ["device_id"], unique=True)
    # The revoked list of every trust bundle: removed devices whose credential still runs.
    removed = sa.text("removed_at IS NOT NULL")
    op.create_index(
        "ix_devices_revoked",
        "devices",
        ["credential_expires_at"],
        postgresql_where=removed,
        sqlite_where=removed,
    )
    # A device removal is a new status-list version too: a row with a device id, no card bit.
    with op.batch_alter_table("status_changes") as batch_op:
        batch_op.add_column(sa.Column("device_id", sa.LargeBinary(length=8), nullable=True))
        batch_op.alter_column("status_index", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("invalid", existing_type=sa.Boolean(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM status_changes WHERE device_id IS NOT NULL")
    with op.batch_alter_table("status_changes") as batch_op:
        batch_op.alter_column("invalid", existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column("status_index", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("device_id")
    op.drop_index("ix_devices_revoked", table_name="devices")
    op.drop_index("ix_devices_device_id", table_name="devices")
    op.drop_index("ix_devices_card_id", table_name="devices")
    op.drop_table("devices")
