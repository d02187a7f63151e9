"""The public contact form in a real browser: a customer with no login and no site sends an
email and a message, gets the code by email (a real SMTP server), enters it, and sees the
request confirmed on its status page. Then support sees it first in the queue."""

import pytest

from tests.helpers import give_second_factor
from tests.intake.conftest import ACME, UNLIMITED, Desk

pytestmark = pytest.mark.browser


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(mail_port=smtp_server[0], **UNLIMITED)


def test_a_customer_with_no_login_confirms_a_request_by_the_emailed_code(
        app, live_server, page, smtp_server, screenshot, sync_document, make_staff):
    sync_document(ACME)
    desk = Desk(app, smtp_server[1])
    page.goto(f"{live_server}/contact")
    assert page.locator("script").count() == 0  # works without JavaScript
    screenshot("form")
    page.get_by_role("button", name="Send to support").click()
    assert page.get_by_text("Enter your email address.").is_visible()  # beside the field
    page.get_by_label("Your email address").fill("ada@acme.example")
    page.get_by_label("What is wrong?").fill("All our sites return 404 since this morning.")
    page.get_by_role("button", name="Send to support").click()
    assert page.get_by_role("heading", name="We have your request").is_visible()
    reference = page.locator(".reference").inner_text()
    screenshot("sent")

    assert desk.deliver().sent == 1
    code = desk.code_for("ada@acme.example")
    page.get_by_label("The 6-digit code from the email").fill("000000" if code != "000000"
                                                               else "111111")
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_text("That code does not work.", exact=False).is_visible()
    page.get_by_label("The 6-digit code from the email").fill(code)
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_role("heading", name=f"Request {reference}").is_visible()
    assert page.get_by_text("Confirmed, and you are a listed contact").is_visible()
    assert page.get_by_text("All our sites return 404 since this morning.").is_visible()
    screenshot("verified")

    account = make_staff("support")
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    give_second_factor(page, account)
    page.get_by_role("link", name="Requests").click()
    first = page.locator("tbody tr").first
    assert reference in first.inner_text() and "authorized" in first.inner_text()
    screenshot("queue")
    first.get_by_role("link", name=reference).click()
    assert page.get_by_text("Acme Corporation").first.is_visible()
    screenshot("request")
