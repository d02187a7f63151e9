"""update fan-out: an update's audience is queued by a job, a batch at a time

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 17:30:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'update_fanout',
        sa.Column('update_id', sa.String(40), sa.ForeignKey('incident_update.id'),
                  primary_key=True),
        sa.Column('incident_id', sa.String(40), nullable=False),
        sa.Column('phase', sa.String(16), nullable=False),
        sa.Column('after', sa.String(40), nullable=True),
        sa.Column('audience', sa.Integer(), nullable=True),
        sa.Column('queued', sa.Integer(), nullable=False),
        sa.Column('batches', sa.Integer(), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_update_fanout_incident_id', 'update_fanout', ['incident_id'])
    op.create_index('ix_update_fanout_pending', 'update_fanout', ['finished_at', 'lease_until'])


def downgrade() -> None:
    op.drop_index('ix_update_fanout_pending', table_name='update_fanout')
    op.drop_index('ix_update_fanout_incident_id', table_name='update_fanout')
    op.drop_table('update_fanout')
