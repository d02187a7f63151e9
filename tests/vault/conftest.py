import pytest

from tests.vault.fixtures import make_document


@pytest.fixture
def small_document():
    return make_document(accounts=3, contacts_per_account=2)
