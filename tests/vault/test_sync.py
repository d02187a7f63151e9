"""Sync and import: idempotent upserts keyed on external IDs, versions, per-entry rejections."""

import copy
from datetime import timedelta

from sqlmodel import func, select

from contacts.core.db import make_engine, session_scope, utcnow
from contacts.core.schema import upgrade_database
from contacts.vault import service
from contacts.vault.models import Account, App, Contact, ContactVersion, Site
from contacts.vault.schemas import ImportReport
from tests.vault.fixtures import make_document


def count(engine, model) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def account_id_of(engine, external_id: str) -> str:
    with session_scope(engine) as session:
        return session.exec(select(Account.id).where(Account.external_id == external_id)).one()


def test_a_sync_creates_then_the_same_sync_changes_nothing(engine, sync_document, small_document):
    first = sync_document(small_document)
    assert (first.accounts.created, first.sites.created, first.contacts.created) == (3, 4, 6)
    again = sync_document(small_document)
    assert again.contacts.unchanged == 6 and again.contacts.created == again.contacts.updated == 0
    assert (again.accounts.unchanged, again.sites.unchanged) == (3, 4)
    assert (count(engine, Account), count(engine, Site), count(engine, Contact)) == (3, 4, 6)
    assert count(engine, ContactVersion) == 6


def test_a_changed_contact_gets_a_new_version(engine, vault, sync_document, small_document):
    sync_document(small_document)
    changed = copy.deepcopy(small_document)
    changed["accounts"][0]["contacts"][0]["email"] = "New.Address@Acme.example.net"
    report = sync_document(changed)
    assert (report.contacts.updated, report.contacts.unchanged) == (1, 5)
    account = account_id_of(engine, "A00000")
    with session_scope(engine) as session:
        contacts = service.list_contacts(session=session, vault=vault, account_id=account)
    assert contacts[0].email == "New.Address@Acme.example.net" and contacts[0].version == 2
    assert count(engine, ContactVersion) == 7


def test_as_of_returns_contacts_as_they_were_before_a_change_and_a_delete(
        engine, vault, sync_document, small_document):
    sync_document(small_document)
    before = utcnow()
    original = small_document["accounts"][0]["contacts"]
    changed = copy.deepcopy(small_document)
    changed["accounts"][0]["contacts"][0]["name"] = "Renamed Person"
    changed["accounts"][0]["contacts"][1]["deleted"] = True
    report = sync_document(changed)
    assert (report.contacts.updated, report.contacts.deleted) == (1, 1)
    account = account_id_of(engine, "A00000")
    with session_scope(engine) as session:
        now = service.list_contacts(session=session, vault=vault, account_id=account)
        then = service.list_contacts(session=session, vault=vault, account_id=account,
                                     as_of=before)
        earliest = service.list_contacts(session=session, vault=vault, account_id=account,
                                         as_of=before - timedelta(days=1))
    assert [c.name for c in now] == ["Renamed Person"]
    assert [(c.name, c.email, c.sites) for c in then] == [
        (c["name"], c["email"], c["sites"]) for c in original]
    assert earliest == []


def test_a_deleted_contact_comes_back_when_synced_again(engine, vault, sync_document,
                                                        small_document):
    sync_document(small_document)
    gone = copy.deepcopy(small_document)
    gone["accounts"][0]["contacts"][0]["deleted"] = True
    sync_document(gone)
    report = sync_document(small_document)
    assert report.contacts.updated == 1
    with session_scope(engine) as session:
        events = list(session.exec(select(ContactVersion.event).order_by(ContactVersion.id)))
    assert events[-2:] == ["deleted", "restored"]


def test_bad_entries_are_rejected_with_their_path_and_the_rest_is_stored(
        engine, sync_document, small_document):
    bad = copy.deepcopy(small_document)
    contacts = bad["accounts"][1]["contacts"]
    contacts[0]["phone"] = "not a phone"
    contacts[1]["timezone"] = "Mars/Olympus"
    bad["accounts"][2]["contacts"][0]["sites"] = ["S99999-0"]
    report = sync_document(bad)
    assert report.contacts.created == 3 and report.contacts.rejected == 3
    reasons = {(r.line, r.reason) for r in report.rejections}
    assert reasons == {
        ("accounts[1].contacts[0]", "phone is not a phone number"),
        ("accounts[1].contacts[1]", "timezone must be an IANA name such as 'Europe/Paris', "
                                    "got 'Mars/Olympus'"),
        ("accounts[2].contacts[0]", "site 'S99999-0' is not a site of account 'A00002'"),
    }


def test_a_site_of_another_account_is_refused(engine, sync_document, small_document):
    sync_document(small_document)
    thief = {"accounts": [{"external_id": "A00009", "name": "Other",
                           "sites": [small_document["accounts"][0]["sites"][0]]}]}
    report = sync_document(thief)
    assert report.sites.rejected == 1
    assert report.rejections[0].reason.startswith("site belongs to another account (acc_")


def test_a_contact_listed_twice_is_rejected_the_second_time(sync_document, small_document):
    doubled = copy.deepcopy(small_document)
    doubled["accounts"][0]["contacts"].append(doubled["accounts"][0]["contacts"][0])
    report = sync_document(doubled)
    assert report.contacts.created == 6 and report.contacts.rejected == 1
    assert report.rejections[0].line == "accounts[0].contacts[2]"


def test_apps_are_synced_under_their_sites_and_cannot_move_between_them(engine, sync_document,
                                                                        small_document):
    document = copy.deepcopy(small_document)
    document["accounts"][0]["sites"][0]["apps"] = [{"external_id": "APP-1", "name": "Insight"}]
    report = sync_document(document)
    assert report.apps.created == 1
    assert sync_document(document).apps.unchanged == 1
    moved = copy.deepcopy(document)
    moved["accounts"][0]["sites"][0]["apps"] = []
    moved["accounts"][1]["sites"][0]["apps"] = [{"external_id": "APP-1", "name": "Insight"}]
    report = sync_document(moved)
    assert report.apps.rejected == 1
    assert report.rejections[0].reason.startswith("app belongs to another site (site_")
    with session_scope(engine) as session:
        (app,) = session.exec(select(App)).all()
    assert app.id.startswith("app_") and app.name == "Insight"


def test_a_parallel_sync_reports_and_stores_what_a_one_process_sync_does(
        engine, vault, sync_document, tmp_path):
    """Large imports check and encrypt in worker processes, several batches in flight (the
    CLI from 5,000 contacts); batches of 10 put every edge across batch boundaries. The same
    document synced in one process into a second database gives the same report and
    contacts."""
    document = make_document(accounts=24, contacts_per_account=5, seed=3)
    accounts = document["accounts"]
    accounts[20]["sites"].append(dict(accounts[2]["sites"][0]))  # a site of another account
    accounts[9]["contacts"][1]["email"] = "not an address"
    accounts[15]["contacts"].append(dict(accounts[15]["contacts"][0]))  # twice in one account
    changed = copy.deepcopy(document)
    changed["accounts"][4]["contacts"][0]["name"] = "Renamed Person"
    changed["accounts"][18]["contacts"][2]["deleted"] = True
    changed["accounts"][23]["sites"][0]["deleted"] = True
    del changed["accounts"][23]["contacts"]  # its contacts named that site
    one_process = make_engine(f"sqlite:///{tmp_path / 'one-process.db'}")
    upgrade_database(one_process)
    try:
        for doc in (document, changed):
            parallel = without_ids(sync_document(doc, parallel=True, batch_size=10))
            alone = without_ids(sync_document(doc, into=one_process, batch_size=10))
            assert parallel == alone
        assert parallel["contacts"] == {
            "created": 0, "updated": 1, "unchanged": 112, "deleted": 1, "rejected": 2,
            "held": 0}
        assert parallel["deletions"] == [
            ("contact", "applied", 1, [accounts[18]["contacts"][2]["external_id"]]),
            ("site", "applied", 1, [accounts[23]["sites"][0]["external_id"]])]
        assert {(r["line"], r["reason"]) for r in parallel["rejections"]} == {
            ("accounts[20].sites[1]", "site belongs to another account"),
            ("accounts[9].contacts[1]", "email is not a valid address"),
            ("accounts[15].contacts[5]", "this contact appears twice in the same account")}
        assert contacts_of(engine, vault) == contacts_of(one_process, vault)
        wanted = accounts[4]["contacts"][1]
        for database in (engine, one_process):  # the workers' blind indexes find them too
            with session_scope(database) as session:
                found = service.find_contacts(session=session, vault=vault,
                                              email=wanted["email"].upper())
                assert [contact.external_id for contact in found] == [wanted["external_id"]]
    finally:
        one_process.dispose()
    assert (count(engine, Contact), count(engine, ContactVersion)) == (119, 121)


def without_ids(report: ImportReport) -> dict:
    """The report with the IDs its reasons name (which differ between databases) left out."""
    figures = report.model_dump()
    for rejection in figures["rejections"]:
        rejection["reason"] = rejection["reason"].split(" (")[0]
    figures["deletions"] = [(deletion["kind"], deletion["state"], deletion["count"],
                             [item["external_id"] for item in deletion["sample"]])
                            for deletion in figures["deletions"]]
    return figures


def contacts_of(engine, vault) -> list[tuple]:
    """Every account's live contacts, decrypted, by external IDs."""
    with session_scope(engine) as session:
        accounts = session.exec(select(Account.id, Account.external_id)).all()
        return sorted(
            (external_id, contact.external_id, contact.name, contact.email, contact.phone,
             contact.role, contact.locale, contact.timezone, contact.sites, contact.version)
            for account_id, external_id in accounts
            for contact in service.list_contacts(session=session, vault=vault,
                                                 account_id=account_id))


def test_a_parallel_sync_guards_deletions_as_a_one_process_sync_does(engine, vault,
                                                                      sync_document, tmp_path):
    """Deletions spread over many batches and worker processes are one set per kind: over
    the cap (50) held whole, under it applied, the same in one process."""
    document = make_document(accounts=30, contacts_per_account=3, seed=5)
    changed = copy.deepcopy(document)
    for account in changed["accounts"][:18]:  # 54 contacts: over the cap
        for contact in account["contacts"]:
            contact["deleted"] = True
    for account in changed["accounts"][26:]:  # 4 sites (and the contacts naming them)
        account["sites"][0]["deleted"] = True
        del account["contacts"]
    changed["accounts"][20]["contacts"][0]["name"] = "Renamed Person"
    one_process = make_engine(f"sqlite:///{tmp_path / 'one-process.db'}")
    upgrade_database(one_process)
    try:
        for doc in (document, changed):
            parallel = without_ids(sync_document(doc, parallel=True, batch_size=10))
            alone = without_ids(sync_document(doc, into=one_process, batch_size=10))
            assert parallel == alone
        assert [deletion[:3] for deletion in parallel["deletions"]] == [
            ("contact", "held", 54), ("site", "applied", 4)]
        assert (parallel["contacts"]["held"], parallel["contacts"]["updated"]) == (54, 1)
        assert contacts_of(engine, vault) == contacts_of(one_process, vault)
        assert len(contacts_of(engine, vault)) == 90
    finally:
        one_process.dispose()
