"""Comms staff run an incident in a real browser: create it, add 30 sites of 25 accounts,
move sites through stages, compose, preview for an account, publish; every contact of the
25 accounts receives one email on a real SMTP server, and the public page and an account's
private link show the right percentages."""

import re

import pytest

from contacts.core.db import utcnow
from contacts.core.mail import Mailer
from contacts.core.services import services
from contacts.delivery import outbox
from tests.helpers import give_second_factor
from tests.incidents.conftest import run_fanout, thirty_sites
from tests.vault.fixtures import make_document

pytestmark = pytest.mark.browser


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(mail_port=smtp_server[0])


def test_comms_publish_an_update_that_reaches_every_affected_contact(
        app, live_server, page, smtp_server, screenshot, sync_document, make_staff):
    document = make_document(accounts=25, contacts_per_account=3)
    sync_document(document)
    refs = thirty_sites(document)
    comms = make_staff("comms")
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(comms.email)
    page.get_by_label("Password").fill(comms.password)
    page.get_by_role("button", name="Sign in").click()
    give_second_factor(page, comms)
    page.get_by_role("link", name="Incidents").click()
    page.get_by_label("Title").fill("Sites deleted by a maintenance script")
    page.get_by_label("Severity").select_option("critical")
    page.get_by_role("button", name="Open the incident").click()
    page.get_by_label("Sites: site IDs").fill("\n".join(refs))
    page.get_by_role("button", name="Add the sites").click()
    assert page.get_by_text("30 sites added.").is_visible()
    page.get_by_label("Sites to move").fill("\n".join(refs[:12]))
    page.get_by_label("To stage").select_option("validated_by_us")
    page.get_by_role("button", name="Move the sites").click()
    screenshot("moved")
    assert page.locator(".percentage").first.inner_text() == "40.0%"

    page.get_by_role("button", name="Publish to every affected account").click()
    assert page.get_by_text("the update cannot be published without: what happened").is_visible()
    page.get_by_label("What happened").fill("A maintenance script deleted sites, not apps.")
    page.get_by_label("Restoration timeline").fill("Restores run in waves over four days.")
    page.get_by_label("Confidence in the timeline").select_option("medium")
    page.get_by_label("Confidence in the restore percentage").select_option("high")
    page.get_by_label("Expected data loss").fill("Changes after 07:33 UTC, at most 5 minutes.")
    page.get_by_label("Confidence in the data loss").select_option("high")
    page.get_by_role("button", name="Preview").click()
    preview = page.locator(".preview").first
    assert "Restores run in waves over four days." in preview.inner_text()
    assert "***@" in preview.inner_text()
    public_card, webhook = page.locator(".preview").nth(1), page.locator(".preview").nth(2)
    assert "Changes after 07:33 UTC, at most 5 minutes." in public_card.inner_text()
    assert '"type": "incident.update"' in webhook.inner_text()
    screenshot("preview")
    page.get_by_role("button", name="Publish to every affected account").click()
    assert page.get_by_text("Update 1 published. Its recipients are being queued").is_visible()
    assert page.get_by_text("Queuing recipients: 0 so far").is_visible()
    assert run_fanout(app) == 75  # what the scheduler's fan-out job does
    page.reload()
    assert page.get_by_text("75 recipients: 0 sent, 75 queued, 0 failed").is_visible()
    assert not page.get_by_text("Queuing recipients").is_visible()
    screenshot("published")

    port, sink = smtp_server
    sent = outbox.drain(engine=services(app).engine,
                        cipher=services(app).crypto.cipher,
                        mailer=Mailer(host="127.0.0.1", port=port, sender="s@l.test"),
                        now=utcnow())
    assert sent.sent == 75
    admins = [contact["email"] for account in document["accounts"]
              for contact in account["contacts"] if contact["role"] == "site_admin"]
    received = [message["To"] for message in sink.messages]
    assert all(received.count(address) == 1 for address in admins)

    incident_url = page.get_by_role("link", name="public page").get_attribute("href")
    private = page.locator("td a").first.get_attribute("href")
    page.goto(live_server + incident_url)
    assert "40.0%" in page.locator(".percentage").inner_text()
    assert page.get_by_text("Next update by").is_visible()
    screenshot("public")
    page.goto(live_server + "/status/" + private.split("/status/", 1)[1])  # base_url is :8000
    assert re.search(r"\d+\.\d%", page.locator(".percentage").inner_text())
    screenshot("private")
