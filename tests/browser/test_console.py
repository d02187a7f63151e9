"""The console in a real browser: sign in, a refused password, a token created and revoked."""

import pytest

from tests.helpers import give_second_factor

pytestmark = pytest.mark.browser


def sign_in(page, base, account, password=None):
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(password or account.password)
    page.get_by_role("button", name="Sign in").click()
    if password is None:
        give_second_factor(page, account)


def test_an_admin_signs_in_with_the_keyboard_and_out_again(live_server, page, make_staff,
                                                            screenshot):
    account = make_staff("admin")
    page.goto(f"{live_server}/console/")
    assert page.url.startswith(f"{live_server}/login?next=")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/login/code")
    page.get_by_label("Authentication code").fill(account.code())
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/console/")
    assert page.get_by_role("heading", name="Console").is_visible()
    assert account.id in page.content()
    screenshot("console")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_server}/login")
    assert page.get_by_text("You are signed out.").is_visible()


def test_a_wrong_password_is_shown_next_to_the_field(live_server, page, make_staff, screenshot):
    account = make_staff("support")
    sign_in(page, live_server, account, password="not the right password")
    error = page.locator("#password-error")
    assert error.inner_text() == "Wrong email or password."
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Email").input_value() == account.email
    screenshot("refused")


def test_an_admin_creates_and_revokes_a_token(live_server, page, make_staff, screenshot):
    sign_in(page, live_server, make_staff("admin"))
    page.wait_for_url(f"{live_server}/console/")
    page.get_by_role("link", name="API tokens").first.click()
    page.get_by_label("Name").fill("product sync")
    page.get_by_label("contacts:write: push contact, account and site changes").check()
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("llt_")
    screenshot("token-created")
    page.get_by_role("link", name="Back to API tokens").click()
    row = page.get_by_role("row", name="product sync")
    assert "active" in row.inner_text()
    row.get_by_role("button", name="Revoke").click()
    assert "revoked" in page.get_by_role("row", name="product sync").inner_text()
    screenshot("token-revoked")
