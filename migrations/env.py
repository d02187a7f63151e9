"""Alembic environment: runs against the engine Lifeline hands over (see system.service)."""

from alembic import context
from sqlmodel import SQLModel

# Each import registers its tables on SQLModel.metadata.
import contacts.backup.models  # noqa: F401
import contacts.core.audit  # noqa: F401
import contacts.core.scheduler  # noqa: F401
import contacts.delivery.models  # noqa: F401
import contacts.escalations.models  # noqa: F401
import contacts.inbound.models  # noqa: F401
import contacts.incidents.models  # noqa: F401
import contacts.intake.models  # noqa: F401
import contacts.staff.models  # noqa: F401
import contacts.vault.models  # noqa: F401
from contacts.core.db import UTCDateTime

target_metadata = SQLModel.metadata


def render_item(type_, obj, autogen_context):
    """Write our column types as plain SQLAlchemy ones, so migrations never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and type(obj).__module__.startswith("sqlmodel"):
        return f"sa.String({obj.length})" if getattr(obj, "length", None) else "sa.String()"
    return False


def include_object(obj, name, type_, reflected, compare_to):
    # APScheduler's job table is created by our migration but has no SQLModel class.
    return not (type_ == "table" and name == "apscheduler_jobs")


def run_migrations_online() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=render_item,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run flask --app app db upgrade")
run_migrations_online()
