"""Write a new Alembic migration from the models: `make migration m="add contacts"`.

It compares the models with a scratch SQLite database migrated to the latest revision, so
the result does not depend on any local database. Read and edit what it writes.
"""

from __future__ import annotations

import sys
import tempfile

from alembic import command

from contacts.core.db import make_engine
from contacts.core.schema import alembic_config, upgrade_database


def main(message: str) -> int:
    if not message.strip():
        print("give the migration a message: make migration m=\"what it does\"", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/scratch.db")
        upgrade_database(engine)
        command.revision(alembic_config(engine), message=message, autogenerate=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:])))
