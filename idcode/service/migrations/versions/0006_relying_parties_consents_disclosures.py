"""relying parties, consents, disclosures and links; terminals of a relying party

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relying_parties",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("sector", sa.String(length=32), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("links_version", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "consents",
        sa.Column("code_id", sa.LargeBinary(length=8), nullable=False),
        sa.Column("card_id", sa.String(length=36), nullable=False),
        sa.Column("relying_party_id", sa.String(length=36), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"]),
        sa.ForeignKeyConstraint(["relying_party_id"], ["relying_parties.id"]),
        sa.PrimaryKeyConstraint("code_id"),
    )
    op.create_index("ix_consents_expires_at", "consents", ["expires_at"])
    op.create_table(
        "disclosures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("card_id", sa.String(length=36), nullable=False),
        sa.Column("relying_party_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("counter", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"]),
        sa.ForeignKeyConstraint(["relying_party_id"], ["relying_parties.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_disclosures_card_id", "disclosures", ["card_id"])
    op.create_index("ix_disclosures_relying_party_id", "disclosures", ["relying_party_id"])
    op.create_table(
        "relying_party_links",
        sa.Column("relying_party_id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=24), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["relying_party_id"], ["relying_parties.id"]),
        sa.PrimaryKeyConstraint("relying_party_id", "subject"),
    )
    with op.batch_alter_table("terminals") as batch_op:
        batch_op.add_column(sa.Column("relying_party_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_terminals_relying_party_id", ["relying_party_id"])
        batch_op.create_foreign_key(
            "fk_terminals_relying_party_id", "relying_parties", ["relying_party_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch_op:
        batch_op.drop_constraint("fk_terminals_relying_party_id", type_="foreignkey")
        batch_op.drop_index("ix_terminals_relying_party_id")
        batch_op.drop_column("relying_party_id")
    op.drop_table("relying_party_links")
    op.drop_index("ix_disclosures_relying_party_id", table_name="disclosures")
    op.drop_index("ix_disclosures_card_id", table_name="disclosures")
    op.drop_table("disclosures")
    op.drop_index("ix_consents_expires_at", table_name="consents")
    op.drop_table("consents")
    op.drop_table("relying_parties")
