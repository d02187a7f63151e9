"""webhook endpoints: several per account, each with an ID, its secret's rotation time, and
the outbox's webhooks naming their endpoint (signed when sent, sent in order)

Revision ID: 0017_webhooks
Revises: 0016
Create Date: 2026-12-03 17:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

from contacts.core.ids import new_id


revision = '0017_webhooks'
down_revision = '0016'
branch_labels = None
depends_on = None

_COLUMNS = "account_id, url, secret_encrypted, created_by, created_at, quarantined_at"


def upgrade() -> None:
    op.create_table('webhook_endpoint',
    sa.Column('id', sa.String(40), nullable=False),
    sa.Column('account_id', sa.String(40), nullable=False),
    sa.Column('url', sa.String(2048), nullable=False),
    sa.Column('secret_encrypted', sa.String(512), nullable=False),
    sa.Column('created_by', sa.String(40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_endpoint_account_id', 'webhook_endpoint', ['account_id'],
                    unique=False)
    connection = op.get_bind()
    # Each account's endpoint becomes one with an ID, its sealed secret moved as it is (the
    # column keeps its encryption context); it is signed with that secret until rotated.
    for row in connection.execute(sa.text(f"SELECT {_COLUMNS} FROM account_webhook")).all():
        connection.execute(sa.text(
            f"INSERT INTO webhook_endpoint (id, {_COLUMNS}) VALUES (:id, :account_id, :url, "
            ":secret_encrypted, :created_by, :created_at, :quarantined_at)"),
            {"id": new_id("whk"), **row._mapping})
    op.drop_table('account_webhook')
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoint_id', sa.String(40), nullable=True))
        batch_op.create_index('ix_outbox_message_endpoint', ['endpoint_id', 'state', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_message_endpoint')
        batch_op.drop_column('endpoint_id')
    op.create_table('account_webhook',
    sa.Column('account_id', sa.String(40), nullable=False),
    sa.Column('url', sa.String(2048), nullable=False),
    sa.Column('secret_encrypted', sa.String(512), nullable=False),
    sa.Column('created_by', sa.String(40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('account_id')
    )
    connection = op.get_bind()
    seen = set()  # one endpoint per account before: the oldest is kept
    for row in connection.execute(sa.text(
            f"SELECT {_COLUMNS} FROM webhook_endpoint ORDER BY created_at, id")).all():
        if row.account_id not in seen:
            seen.add(row.account_id)
            connection.execute(sa.text(
                f"INSERT INTO account_webhook ({_COLUMNS}) VALUES (:account_id, :url, "
                ":secret_encrypted, :created_by, :created_at, :quarantined_at)"),
                dict(row._mapping))
    op.drop_index('ix_webhook_endpoint_account_id', table_name='webhook_endpoint')
    op.drop_table('webhook_endpoint')
