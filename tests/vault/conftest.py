import pytest

from contacts.audit import Actor
from contacts.db import session_scope
from contacts.vault import service
from tests.vault.fixtures import make_document


@pytest.fixture
def vault(app):
    return service.Vault.from_settings(app.extensions["lifeline.settings"],
                                       app.extensions["lifeline.crypto"])


@pytest.fixture
def sync_document(engine, vault):
    """Sync a document through the service, as the API and the importer do."""

    def run(document: dict, actor: Actor | None = None):
        from contacts.vault.schemas import SyncDocument

        parsed = SyncDocument.model_validate(document)
        entries = [service.AccountEntry.from_document(account, index)
                   for index, account in enumerate(parsed.accounts)]
        with session_scope(engine) as session:
            return service.sync(session=session, vault=vault, actor=actor or Actor.system("t"),
                                entries=entries, source="sync")

    return run


@pytest.fixture
def small_document():
    return make_document(accounts=3, contacts_per_account=2)
