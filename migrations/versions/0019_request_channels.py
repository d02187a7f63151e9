"""request channels: a request and each of its messages say how they came (the web, or
email); a message, and an item's customer_reply event, name the inbound email they came in
and keep its Message-ID sealed

Revision ID: 0019_request_channels
Revises: 0018_inbound
Create Date: 2026-12-04 19:00:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0019_request_channels'
down_revision = '0018_inbound'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('support_request') as batch:
        batch.add_column(sa.Column('channel', sa.String(16), nullable=False,
                                   server_default='web'))
        batch.add_column(sa.Column('inbound_id', sa.String(40), nullable=True))
    with op.batch_alter_table('request_message') as batch:
        batch.add_column(sa.Column('channel', sa.String(16), nullable=False,
                                   server_default='web'))
        batch.add_column(sa.Column('inbound_id', sa.String(40), nullable=True))
        batch.add_column(sa.Column('message_ref_encrypted', sa.Text(), nullable=True))
    with op.batch_alter_table('item_event') as batch:
        batch.add_column(sa.Column('message_ref_encrypted', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('item_event') as batch:
        batch.drop_column('message_ref_encrypted')
    with op.batch_alter_table('request_message') as batch:
        batch.drop_column('message_ref_encrypted')
        batch.drop_column('inbound_id')
        batch.drop_column('channel')
    with op.batch_alter_table('support_request') as batch:
        batch.drop_column('inbound_id')
        batch.drop_column('channel')
