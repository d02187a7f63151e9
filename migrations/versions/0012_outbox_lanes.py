"""outbox lanes: each lane claims its own channel through the due index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:30:00.000000
"""

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_message_due')
        batch_op.create_index('ix_outbox_message_due', ['state', 'channel', 'next_attempt_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_message_due')
        batch_op.create_index('ix_outbox_message_due', ['state', 'next_attempt_at'],
                              unique=False)
