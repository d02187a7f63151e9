"""template failures

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-02 15:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incident_update', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_failures', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('incident_update', schema=None) as batch_op:
        batch_op.drop_column('template_failures')
