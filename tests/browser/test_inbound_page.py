"""An inbound email's console page in real Chromium: hostile HTML from a sender loads
nothing from anywhere but Lifeline and runs no script."""

import pytest
from sqlmodel import select

from contacts.core.db import session_scope
from contacts.core.services import services
from contacts.inbound.models import InboundMessage
from tests.browser.test_escalation_pages import sign_in
from tests.inbound import letters
from tests.inbound import test_mailroom as end_to_end
from tests.inbound.conftest import dovecot, dovecot_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser
app = end_to_end.app

HOSTILE = ('<html><head><base href="http://evil.test/"><meta http-equiv="refresh" '
           'content="0;url=http://evil.test/r"><link rel="stylesheet" href="http://evil.test/a.css">'
           '<style>body{background:url(http://evil.test/s)}</style></head><body>'
           '<script>document.title="pwned";fetch("http://evil.test/x")</script>'
           '<p style="background:url(http://evil.test/p)" onmouseover="document.title=1">Hello'
           '</p><img src="http://evil.test/pixel.gif" srcset="http://evil.test/2x.gif 2x">'
           '<img src=x onerror="document.title=\'pwned\'">'
           '<svg><image href="http://evil.test/svg"/></svg><iframe src="http://evil.test/f">'
           '</iframe><video poster="http://evil.test/v"></video>'
           '<table background="http://evil.test/t"><tr><td>cell</td></tr></table>'
           '<a href="javascript:document.title=\'pwned\'">click</a></body></html>')


def test_hostile_html_loads_nothing_remote_and_runs_nothing(app, live_server, page, make_staff,
                                                            dovecot, screenshot):  # noqa: F811
    raw = letters.new_message(sender="Ann <ann@one.test>", to=end_to_end.SUPPORT,
                              subject="HTML", body="BODY", verdict=None)
    raw = raw.replace(b"Content-Type: text/plain; charset=UTF-8; format=flowed",
                      b"Content-Type: text/html; charset=UTF-8")
    dovecot.append(raw.replace(b"BODY", HOSTILE.encode()))
    end_to_end.poll(app)
    with session_scope(services(app).engine) as session:
        message_id = session.exec(select(InboundMessage.id)).one()
    sign_in(page, live_server, make_staff("support"))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server}/console/inbound/{message_id}")
    page.get_by_text("As formatted by the sender").click()
    page.locator(".mail-html p").hover()
    page.locator(".mail-html a").click()
    page.wait_for_load_state("networkidle")
    screenshot("inbound-html")
    assert page.locator(".mail-html td").inner_text() == "cell"
    assert page.title() != "pwned" and page.title() != "1"
    # Not even tried (the sanitizer), before the CSP would block it (the page's header).
    assert [url for url in requested if not url.startswith(live_server)] == []
