"""Matching proposes, proof decides: who lands first in the support queue, and what staff
can do from the console."""

from __future__ import annotations

from sqlmodel import select

from contacts.core.db import session_scope, utcnow
from contacts.intake import triage
from contacts.intake.models import RequestCandidate
from contacts.intake.references import get_by_reference
from contacts.intake.verification import verify_code
from tests.helpers import csrf_token_from


def _send(desk, client, **body) -> str:
    response = desk.submit(client, **body)
    assert response.status_code == 202
    return response.get_json()["reference"]


def _verify(desk, reference: str, address: str) -> None:
    desk.deliver()
    with session_scope(desk.engine) as session:
        verify_code(session=session, intake=desk.intake, vault=desk.vault,
                    reference=reference, code=desk.code_for(address), now=utcnow())


def _queue(desk, view="open") -> list[str]:
    with session_scope(desk.engine) as session:
        return [row.request.reference for row in triage.support_queue(
            session=session, intake=desk.intake, view=view)]


def test_a_verified_site_admin_of_the_matched_account_lands_first(desk, desk_client, acme):
    stranger = _send(desk, desk_client, email="someone@else.example", message="Down!",
                     severity="critical")
    claimed = _send(desk, desk_client, email="gil@globex.example", message="Globex down",
                    severity="critical")  # a known address, never verified
    admin = _send(desk, desk_client, email="ADA@acme.example", message="Shop gone",
                  severity="high")
    assert desk.process() == 3
    _verify(desk, admin, "ADA@acme.example")
    assert _queue(desk)[0] == admin
    found = desk.request(admin)
    assert (found.verification, found.account_id, found.contact_role) == (
        "authorized", acme["A-ACME"], "site_admin")
    assert found.priority == 1  # high, raised one step for a verified site admin
    claimed_request = desk.request(claimed)
    assert claimed_request.account_id == acme["A-GLOBEX"]  # proposed...
    assert claimed_request.verification == "unverified"  # ...but not trusted
    assert desk.request(stranger).verification == "unverified"
    assert desk.request(stranger).account_id is None
    assert _queue(desk, "unverified") == [stranger, claimed]
    assert _queue(desk, "unmatched") == [stranger]


def test_a_verified_address_at_the_right_domain_is_not_enough_to_be_authorized(
        desk, desk_client, acme):
    reference = _send(desk, desk_client, email="intern@acme.example", message="help")
    _verify(desk, reference, "intern@acme.example")  # verifying before matching ran
    found = desk.request(reference)
    assert found.account_id == acme["A-ACME"]  # the domain proposes Acme
    assert found.verification == "email_verified"  # not a listed contact: not authorized
    with session_scope(desk.engine) as session:
        (candidate,) = session.exec(select(RequestCandidate).where(
            RequestCandidate.request_id == found.id)).all()
        assert candidate.reasons == "email domain is a contact's domain"


def test_the_site_as_remembered_and_the_company_find_the_account(desk, desk_client, acme):
    by_url = _send(desk, desk_client, email="x@gmail.com", message="m",
                   site="HTTPS://WWW.Shop.Acme.example/admin")
    by_name = _send(desk, desk_client, email="y@gmail.com", message="m", site="acme shopp")
    by_company = _send(desk, desk_client, email="z@gmail.com", message="m",
                       company="Acme Corporation Inc")
    by_phone = _send(desk, desk_client, email="w@gmail.com", message="m",
                     phone="(415) 555-0101")
    desk.process()
    with session_scope(desk.engine) as session:
        def reasons(reference):
            request = get_by_reference(session=session, reference=reference)
            return [(c.account_name, c.reasons) for c in triage.candidates_of(
                session=session, request_id=request.id)]

        assert reasons(by_url) == [("Acme Corporation", "site hostname shop.acme.example")]
        assert reasons(by_name) == [("Acme Corporation",
                                     "site 'Acme Shop' resembles the one given")]
        assert reasons(by_company) == [("Acme Corporation",
                                        "company resembles the account's name")]
        assert reasons(by_phone) == [("Acme Corporation", "phone is a contact's phone")]
    assert desk.request(by_url).account_id == acme["A-ACME"]
    assert desk.request(by_company).account_id is None  # too weak alone to propose


def test_staff_attach_call_back_and_reply_from_the_console(desk, desk_app, acme, make_staff,
                                                           smtp_server):
    from tests.helpers import Auth

    client = desk_app.test_client()
    reference = _send(desk, client, email="lost@gmail.com", message="Our site vanished")
    desk.process()
    support = make_staff("support")
    Auth(client).login(support)
    queue = client.get("/console/requests?view=unmatched").get_data(as_text=True)
    assert reference in queue and "l***@gmail.com" in queue
    request_id = desk.request(reference).id
    page = client.get(f"/console/requests/{request_id}")
    token = csrf_token_from(page.get_data(as_text=True))
    wrong = client.post(f"/console/requests/{request_id}/attach",
                        data={"csrf_token": token, "account_id": "site_" + "0" * 26})
    assert wrong.status_code == 400
    assert "expected an account ID (acc_...), got a site ID" in wrong.get_data(as_text=True)
    attached = client.post(f"/console/requests/{request_id}/attach",
                           data={"csrf_token": token, "account_id": acme["A-ACME"]})
    assert attached.status_code == 303
    assert desk.request(reference).account_source == "staff"
    assert desk.request(reference).verification == "unverified"  # attaching proves nothing
    page = client.get(f"/console/requests/{request_id}").get_data(as_text=True)
    with session_scope(desk.engine) as session:
        from contacts.vault import service as vault_service
        (ada,) = vault_service.find_contacts(session=session, vault=desk.vault,
                                             email="ada@acme.example")
        ada_id = ada.id
    called = client.post(f"/console/requests/{request_id}/callback",
                         data={"csrf_token": token, "contact_id": ada_id})
    assert called.status_code == 303
    found = desk.request(reference)
    assert (found.verification, found.trust_rank, found.callback_by) == (
        "callback_confirmed", 0, support.id)
    replied = client.post(f"/console/requests/{request_id}/reply",
                          data={"csrf_token": token, "body": "We are restoring it now."})
    assert replied.status_code == 303
    desk.deliver()
    reply_mail = desk.mail_to("lost@gmail.com")[-1]
    assert "We are restoring it now." in reply_mail.get_body(("plain",)).get_content()
    audit_page = Auth(client)
    audit_page.logout()
    admin = make_staff("admin")
    Auth(client).login(admin)
    log = client.get("/console/audit").get_data(as_text=True)
    for action in ("request.attached", "request.callback_confirmed", "request.replied"):
        assert action in log


def test_comms_staff_cannot_open_the_support_queue(desk_app, make_staff):
    from tests.helpers import Auth

    client = desk_app.test_client()
    Auth(client).login(make_staff("comms"))
    assert client.get("/console/requests").status_code == 403


def test_the_request_page_shows_the_requester_only_on_a_reason_and_audits_it(
        desk, desk_app, make_staff):
    from contacts.core import audit
    from tests.helpers import Auth

    client = desk_app.test_client()
    reference = _send(desk, client, email="Private.Person@acme.example", message="help",
                      phone="+33 6 12 34 56 78")
    support = make_staff("support")
    Auth(client).login(support)
    request_id = desk.request(reference).id
    url = f"/console/requests/{request_id}"

    def shown(html: str) -> bool:
        return "Private.Person@acme.example" in html or "612345678" in html.replace(" ", "")

    def reveals() -> list:
        with session_scope(desk.engine) as session:
            return audit.list_entries(session, audit.AuditFilter(
                action="request.requester_revealed", target_id=request_id))

    page = client.get(url).get_data(as_text=True)
    assert not shown(page) and "P***@acme.example" in page  # masked by default
    token = csrf_token_from(page)
    no_csrf = client.post(f"{url}/reveal", data={"reason": "customer called back"})
    short = client.post(f"{url}/reveal", data={"csrf_token": token, "reason": "x"})
    for refused in (no_csrf, short):
        assert refused.status_code == 400 and not shown(refused.get_data(as_text=True))
    assert reveals() == []

    revealed = client.post(f"{url}/reveal", data={"csrf_token": token,
                                                  "reason": "calling the requester back"})
    assert revealed.status_code == 200
    html = revealed.get_data(as_text=True)
    assert "Private.Person@acme.example" in html and "this reading is in the audit log" in html
    (entry,) = reveals()
    assert entry.actor_id == support.id and entry.detail["reason"] == "calling the requester back"
    assert "Private.Person" not in str(entry.detail)
    assert not shown(client.get(url).get_data(as_text=True))  # once, for that page only
