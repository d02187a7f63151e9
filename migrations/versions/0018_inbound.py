"""inbound mail: the messages read from IMAP mailboxes (known by mailbox, UIDVALIDITY and
UID; the whole message sealed; what the router did) and their attachments, sealed

Revision ID: 0018_inbound
Revises: 0017_webhooks
Create Date: 2026-12-04 18:47:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0018_inbound'
down_revision = '0017_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_message',
    sa.Column('id', sa.String(40), nullable=False),
    sa.Column('mailbox', sa.String(64), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('message_id_digest', sa.String(64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('raw_encrypted', sa.Text(), nullable=True),
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('outcome', sa.String(24), nullable=True),
    sa.Column('error', sa.String(200), nullable=True),
    sa.Column('thread_kind', sa.String(16), nullable=True),
    sa.Column('thread_id', sa.String(40), nullable=True),
    sa.Column('account_id', sa.String(40), nullable=True),
    sa.Column('request_id', sa.String(40), nullable=True),
    sa.Column('item_id', sa.String(40), nullable=True),
    sa.Column('contact_id', sa.String(40), nullable=True),
    sa.Column('sender_index', sa.String(64), nullable=True),
    sa.Column('sender_verified', sa.Boolean(), nullable=False),
    sa.Column('sender_is_party', sa.Boolean(), nullable=True),
    sa.Column('automatic', sa.String(24), nullable=True),
    sa.Column('channel', sa.String(16), nullable=False),
    sa.Column('subject_encrypted', sa.Text(), nullable=True),
    sa.Column('text_encrypted', sa.Text(), nullable=True),
    sa.Column('shown_encrypted', sa.Text(), nullable=True),
    sa.Column('html_encrypted', sa.Text(), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('mailbox', 'uidvalidity', 'uid', name='uq_inbound_message_uid')
    )
    op.create_index('ix_inbound_message_message_id', 'inbound_message',
                    ['mailbox', 'message_id_digest'], unique=False)
    op.create_index('ix_inbound_message_account', 'inbound_message',
                    ['account_id', 'stored_at'], unique=False)
    op.create_index('ix_inbound_message_request_id', 'inbound_message', ['request_id'],
                    unique=False)
    op.create_index('ix_inbound_message_item_id', 'inbound_message', ['item_id'], unique=False)
    op.create_index('ix_inbound_message_sender_index', 'inbound_message', ['sender_index'],
                    unique=False)
    op.create_table('inbound_attachment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(40), nullable=False),
    sa.Column('filename_encrypted', sa.Text(), nullable=False),
    sa.Column('content_type', sa.String(127), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data_encrypted', sa.Text(), nullable=True),
    sa.Column('dropped', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['inbound_message.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_inbound_attachment_message_id', 'inbound_attachment', ['message_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbound_attachment_message_id', table_name='inbound_attachment')
    op.drop_table('inbound_attachment')
    for name in ('ix_inbound_message_sender_index', 'ix_inbound_message_item_id',
                 'ix_inbound_message_request_id', 'ix_inbound_message_account',
                 'ix_inbound_message_message_id'):
        op.drop_index(name, table_name='inbound_message')
    op.drop_table('inbound_message')
