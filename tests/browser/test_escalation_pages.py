"""One customer, one picture, in a real browser: a request sent from the public contact form,
an escalation that came by phone and one from an executive, all about the same account, end
up on that account's page, in its open work items and in one timeline. The support queue and
the dashboard show the same three items.

The scheduled jobs (matching, the outbox, the escalations' sync) are run by hand, as the
scheduler would run them; the verification code comes by email through a real SMTP server.
"""

import pytest
from sqlmodel import select

from contacts import reactions
from contacts.core.db import session_scope, utcnow
from contacts.core.services import services
from contacts.escalations.service import SupportDesk
from contacts.vault.models import Account, Contact
from tests.escalations.conftest import ACCOUNTS
from tests.helpers import give_second_factor
from tests.intake.conftest import UNLIMITED, Desk

pytestmark = pytest.mark.browser

ADA = "ada@acme.example.com"  # a listed contact (site admin) of Acme Gardens
MESSAGE = "Our shop acme.example.com shows a blank page since 07:30."
PHONE_TITLE = "Ada called: the shop is down during the sale"
EXECUTIVE_TITLE = "Acme's CEO wrote to our CEO about the outage"


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(mail_port=smtp_server[0], **UNLIMITED)


def run_scheduled_jobs(app, desk: Desk) -> None:
    """What the scheduler does between two page loads: match new requests to accounts, then
    open a ticket for each matched request."""
    desk.process()
    with session_scope(services(app).engine) as session:
        reactions.sync_requests(session=session, desk=services(app).get(SupportDesk),
                                  now=utcnow())


def id_of(app, model, external_id: str) -> str:
    with session_scope(services(app).engine) as session:
        return session.exec(select(model.id).where(model.external_id == external_id)).one()


def sign_in(page, live_server, account) -> None:
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    give_second_factor(page, account)


def nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Console").get_by_role("link", name=name,
                                                                exact=True).click()


def log_item(page, *, channel: str, title: str, requester_id: str | None = None) -> None:
    """Use the account page's quick-add form ("Log an escalation or a task")."""
    form = page.locator("#quick-add form")
    form.get_by_label("Kind").select_option("escalation")
    form.get_by_label("Arrived by").select_option(channel)
    form.get_by_label("Title").fill(title)
    if requester_id:
        # The list shows the page's masked contacts ("A*** A*** · site admin · a***@…").
        form.get_by_label("Requester (a contact of the account)").select_option(requester_id)
    form.get_by_role("button", name="Log it").click()
    assert page.get_by_text("Logged itm_").is_visible()


def test_a_web_request_a_phone_and_an_executive_escalation_share_one_account_timeline(
        app, live_server, page, smtp_server, screenshot, sync_document, make_staff):
    sync_document(ACCOUNTS)
    account_id, ada_id = id_of(app, Account, "A-1"), id_of(app, Contact, "C-1")
    desk = Desk(app, smtp_server[1])

    # 1. The customer, anonymous, writes from the public form and confirms by the code.
    page.goto(f"{live_server}/contact")
    page.get_by_label("Your email address").fill(ADA)
    page.get_by_label("What is wrong?").fill(MESSAGE)
    page.get_by_role("button", name="Send to support").click()
    assert page.get_by_role("heading", name="We have your request").is_visible()
    reference = page.locator(".reference").inner_text().strip()
    assert desk.deliver().sent == 1
    page.get_by_label("The 6-digit code from the email").fill(desk.code_for(ADA))
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_text("Confirmed, and you are a listed contact").is_visible()
    run_scheduled_jobs(app, desk)

    # 2. Support opens the account and logs what came by phone and from an executive.
    sign_in(page, live_server, make_staff("support"))
    nav(page, "Accounts")
    page.get_by_role("link", name="Acme Gardens").click()
    assert page.url.startswith(f"{live_server}/console/accounts/{account_id}")
    log_item(page, channel="phone", title=PHONE_TITLE, requester_id=ada_id)
    log_item(page, channel="executive", title=EXECUTIVE_TITLE)

    # 3. One page: the three items open, and one timeline with the request and both.
    work = page.locator("#work")
    open_rows = work.locator("table").first.locator("tbody tr")
    assert work.get_by_role("heading", name="Open (3)").is_visible()
    assert open_rows.count() == 3
    rows = open_rows.all_inner_texts()
    assert any(f"Web request {reference}" in row and "ticket · web form" in row for row in rows)
    assert any(PHONE_TITLE in row and "escalation · phone" in row for row in rows)
    assert any(EXECUTIVE_TITLE in row and "escalation · executive" in row for row in rows)

    timeline = page.locator("#timeline ol.timeline li").all_inner_texts()
    assert any(f"Request {reference} received from the public form" in entry
               for entry in timeline)
    assert any(f"Ticket by web form: Web request {reference}" in entry for entry in timeline)
    assert any(f"Escalation by phone: {PHONE_TITLE}" in entry for entry in timeline)
    assert any(f"Escalation by executive: {EXECUTIVE_TITLE}" in entry for entry in timeline)
    screenshot("account")

    # 4. The same three items in the support queue, and counted on the dashboard.
    nav(page, "Work")
    queue = page.locator("tbody tr").all_inner_texts()
    assert page.get_by_text("3 items").is_visible()
    for title, requester in ((f"Web request {reference}", "authorized"),
                             (PHONE_TITLE, "authorized"),  # Ada, picked from the list
                             (EXECUTIVE_TITLE, "—")):  # nobody in particular
        row = next(row for row in queue if title in row)
        assert "Acme Gardens" in row and requester in row, row
    screenshot("queue")

    nav(page, "Dashboard")
    busiest = page.locator("tbody tr").first.locator("td").all_inner_texts()
    assert busiest == ["Acme Gardens", "3"]
    screenshot("dashboard")
