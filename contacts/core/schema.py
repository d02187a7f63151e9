"""The database schema's version: Alembic migrations, applied and inspected."""

from __future__ import annotations

import functools

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from contacts.core.settings import PROJECT_ROOT


def _script_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def alembic_config(engine: Engine) -> Config:
    config = _script_config()
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade_database(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def database_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_revision(_engine: Engine | None = None) -> str | None:
    """The latest migration shipped with this code (read once per process)."""
    return ScriptDirectory.from_config(_script_config()).get_current_head()
