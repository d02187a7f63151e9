"""structured outbox: what a message is about and for whom, its failure kind, as columns;
payloads may be dropped (retention)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 17:00:00.000000

Rows queued before this revision are filled in from their keys, once, here; no code reads
keys after it.
"""

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_outbox_message_about': ['about_kind', 'about_id', 'state'],
    'ix_outbox_message_account': ['account_id', 'about_kind', 'about_id'],
    'ix_outbox_message_failure': ['failure', 'created_at'],
    'ix_outbox_message_recipient': ['recipient_kind', 'recipient_id'],
    'ix_outbox_message_created': ['created_at'],
}


def _columns(key: str, last_error: str | None, state: str) -> dict:
    """The new columns of a row queued before this revision, from its key."""
    parts = key.split(':')
    head = parts[0]
    values = {'about_kind': 'legacy', 'about_id': key[:64], 'account_id': None,
              'recipient_kind': 'unknown', 'recipient_id': None}
    if head == 'update' and len(parts) == 4:
        _, update_id, account, recipient = parts
        kind = ('subscriber' if account == 'public' else
                'webhook' if recipient == 'webhook' else 'contact')
        values = {'about_kind': 'update', 'about_id': update_id,
                  'account_id': None if account == 'public' else account,
                  'recipient_kind': kind,
                  'recipient_id': account if kind == 'webhook' else recipient}
    elif head == 'confirm' and len(parts) >= 2:
        values.update(about_kind='confirmation', about_id=parts[1],
                      recipient_kind='contact', recipient_id=parts[1])
    elif head in ('request-received', 'request-code') and len(parts) >= 2:
        values.update(about_kind='request', about_id=parts[1], recipient_kind='requester',
                      recipient_id=parts[1])
    elif head == 'subscribe' and len(parts) >= 2:
        values.update(about_kind='subscription', about_id=parts[1],
                      recipient_kind='subscriber', recipient_id=parts[1])
    elif head in ('sla', 'item-reply') and len(parts) >= 2:
        values.update(about_kind='item', about_id=parts[1],
                      recipient_kind='staff' if head == 'sla' else 'contact')
    elif head == 'late' and len(parts) >= 2:
        values.update(about_kind='incident', about_id=parts[1], recipient_kind='inbox')
    elif head == 'handoff' and len(parts) >= 2:
        values.update(about_kind='handoff', about_id=parts[1], recipient_kind='staff')
    failure = None
    if state == 'failed':
        failure = 'bounced' if (last_error or '').startswith('bounced: ') else 'expired'
    elif last_error:
        failure = 'deferred'
    return {**values, 'failure': failure}


def upgrade() -> None:
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('about_kind', sa.String(16), nullable=True))
        batch_op.add_column(sa.Column('about_id', sa.String(64), nullable=True))
        batch_op.add_column(sa.Column('account_id', sa.String(40), nullable=True))
        batch_op.add_column(sa.Column('recipient_kind', sa.String(16), nullable=True))
        batch_op.add_column(sa.Column('recipient_id', sa.String(64), nullable=True))
        batch_op.add_column(sa.Column('failure', sa.String(16), nullable=True))
        batch_op.alter_column('payload_encrypted', existing_type=sa.Text(), nullable=True)
    connection = op.get_bind()
    table = sa.table('outbox_message', sa.column('id'), sa.column('key'),
                     sa.column('last_error'), sa.column('state'), sa.column('about_kind'),
                     sa.column('about_id'), sa.column('account_id'),
                     sa.column('recipient_kind'), sa.column('recipient_id'),
                     sa.column('failure'))
    fill = (table.update().where(table.c.id == sa.bindparam('row_id'))
            .values({name: sa.bindparam(name) for name in (
                'about_kind', 'about_id', 'account_id', 'recipient_kind', 'recipient_id',
                'failure')}))
    last = 0
    while True:
        rows = connection.execute(
            sa.select(table.c.id, table.c.key, table.c.last_error, table.c.state)
            .where(table.c.id > last).order_by(table.c.id).limit(5000)).all()
        if not rows:
            break
        connection.execute(fill, [{'row_id': row.id,
                                   **_columns(row.key, row.last_error, row.state)}
                                  for row in rows])
        last = rows[-1].id
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        for name in ('about_kind', 'about_id', 'recipient_kind'):
            batch_op.alter_column(name, existing_type=sa.String(16 if 'kind' in name else 64),
                                  nullable=False)
        for name, columns in INDEXES.items():
            partial = ({'postgresql_where': sa.text('failure IS NOT NULL'),
                        'sqlite_where': sa.text('failure IS NOT NULL')}
                       if name == 'ix_outbox_message_failure' else {})
            batch_op.create_index(name, columns, unique=False, **partial)


def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(sa.text("DELETE FROM outbox_message WHERE payload_encrypted IS NULL"))
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
        batch_op.alter_column('payload_encrypted', existing_type=sa.Text(), nullable=False)
        for name in ('failure', 'recipient_id', 'recipient_kind', 'account_id', 'about_id',
                     'about_kind'):
            batch_op.drop_column(name)
