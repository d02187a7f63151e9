"""The vault's pages in a real browser: find an account by a contact's phone, reveal a
contact with a reason."""

import pytest

from tests.helpers import give_second_factor
from tests.vault.fixtures import make_document

pytestmark = pytest.mark.browser


def test_support_finds_an_account_by_phone_and_reveals_a_contact(live_server, page, make_staff,
                                                                 sync_document, screenshot):
    document = make_document(accounts=4, contacts_per_account=3)
    sync_document(document)
    contact = document["accounts"][2]["contacts"][1]
    account = make_staff("support")
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    give_second_factor(page, account)
    page.get_by_role("link", name="Accounts").first.click()
    page.get_by_label("Find an account").fill(contact["phone"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Acme 2 Ltd").click()
    assert page.get_by_role("heading", name="Acme 2 Ltd").is_visible()
    assert contact["email"] not in page.content()
    screenshot("masked")
    row = page.get_by_role("row").filter(has_text=contact["external_id"])
    row.get_by_text("Reveal", exact=True).first.click()
    row.get_by_label("Why do you need to see this contact?").fill("customer called, site down")
    row.get_by_role("button", name="Reveal").click()
    revealed = page.locator(".revealed")
    assert contact["email"] in revealed.inner_text()
    screenshot("revealed")
