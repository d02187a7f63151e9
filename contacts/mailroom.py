"""Inbound email, acted on. `Mailroom.handle` is what the mailbox reader calls for each
message, inside the reader's transaction: a crash before the commit leaves the message in
its mailbox and nothing done, so it is processed once.

It parses the message (`inbound.parsing`), decides where it goes (`inbound.routing`), seals
it into its row (`inbound.store`), and does what it asks through each area's service:
- a delivery report marks the outbox message it reports (a permanent failure as `bounced`,
  exactly as a synchronous 5xx, so the proof, the fall-back call task and the vault's
  freshness follow; a delay is only recorded); an abuse report stops a subscriber and flags
  a contact;
- an answer joins its thread: the request's conversation and its ticket, an item, or, for
  an answer to an incident update, the account's item for that incident (made if none);
  from anyone but the thread's party it is kept, marked, and moves nothing (an answer to
  an update still makes the account's item when there is none, so support sees it);
- an automatic reply is recorded on its thread and never answered;
- anything else sent to the support address becomes a request, as from the form.
Composed here, above the domains, as `reactions.py` is: it reaches five of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlmodel import Session

from contacts.core.audit import Actor
from contacts.core.db import utcnow
from contacts.core.errors import LifelineError, NotFound
from contacts.delivery import ledger, outbox
from contacts.escalations import service as escalations
from contacts.inbound import parsing, store
from contacts.inbound.message import Inbound
from contacts.inbound.models import InboundMessage
from contacts.inbound.routing import Addresses, Route, route
from contacts.incidents import service as incidents
from contacts.intake import service as intake
from contacts.vault import service as vault_service

log = logging.getLogger(__name__)

MAILROOM = Actor.system("mailroom")
# A report names at most this many recipients that are looked up (each costs a few
# queries; a crafted report may list a hundred).
REPORTED_ADDRESSES = 3
NOTE_EVERY = timedelta(hours=1)  # at most one note about dropped attachments per sender


@dataclass(frozen=True)
class Thread:
    """What an inbound answer joins, and whether its sender is the thread's party (the
    request's requester, the item's requester contact, the contact an update was sent to)."""

    kind: str  # request, item, contact
    id: str
    account_id: str | None
    party: bool
    request_id: str | None = None
    item_id: str | None = None
    contact_id: str | None = None
    incident_id: str | None = None  # the incident an answered update is about


@dataclass
class Mailroom:
    intake: intake.Intake
    writer: intake.RequestWriter
    desk: escalations.SupportDesk
    vault: vault_service.Vault
    addresses: Addresses
    domain: str  # [mail] domain: the Message-IDs Lifeline makes
    trusted_authserv_ids: tuple[str, ...]
    attachment_max_bytes: int
    results_below_received: bool = False

    def handle(self, session: Session, row: InboundMessage, raw: bytes) -> None:
        now = utcnow()
        message = parsing.parse(raw, trusted_authserv_ids=self.trusted_authserv_ids,
                                attachment_max_bytes=self.attachment_max_bytes,
                                results_below_received=self.results_below_received)
        store.seal(session, row, message, cipher=self.intake.crypto.cipher,
                   sender_index=self._index(message.sender.address))
        decided = route(message, self.addresses)
        if decided.kind == "report":
            self._report(session, row, message, decided, now)
        elif decided.kind in ("reply", "auto_reply"):
            thread = self._thread(session, message, decided)
            if thread is not None and (message.sender.refuted or (
                    decided.thread is None and not message.sender.verified)):
                # The thread's party by a From the receiving server found forged, or found
                # by Message-IDs alone (which anyone can compute or copy) with a From no one
                # vouches for: kept on the thread, acting as nobody.
                thread = replace(thread, party=False)
            if thread is not None:
                self._join(session, row, message, thread, now,
                           automatic=decided.kind == "auto_reply")
            elif decided.kind == "auto_reply":
                row.outcome = "auto_reply"  # to nothing we know: recorded, never answered
            else:
                self._request(session, row, message, now)
        elif decided.kind == "request":
            self._request(session, row, message, now)
        else:
            row.outcome = "ignored"
        if row.outcome in ("reply", "request"):
            self._tell_of_dropped(session, row, message, now)
        session.add(row)

    def _tell_of_dropped(self, session: Session, row: InboundMessage, message: Inbound,
                         now: datetime) -> None:
        """A note to the sender of a person's email whose attachments were over the cap
        (once per email: its key is the email's; once an hour per sender, as receipts)."""
        dropped = [attachment.filename or "attachment" for attachment in message.attachments
                   if attachment.data is None]
        sender = message.sender.address
        if not dropped or not sender or message.sender.refuted or self._is_ours(sender):
            return
        if row.sender_index and store.dropped_lately(
                session=session, sender_index=row.sender_index, other_than=row.id,
                since=now - NOTE_EVERY):
            return
        party = intake.request_party(session=session, request_id=row.request_id) \
            if row.request_id else None
        subject, text, html = self.writer.render("attachment_refused", _locale(message), {
            "subject": message.subject[:200] or "your email", "dropped": dropped,
            "reference": party.reference if party else None,
            "limit_mb": max(1, self.attachment_max_bytes // 1_000_000)})
        outbox.enqueue_email(
            session=session, cipher=self.intake.crypto.cipher, key=f"inbound-note:{row.id}",
            purpose="attachment_refused", now=now,
            topic=outbox.Topic("inbound", row.id, "sender", None, row.account_id),
            email=outbox.Email(to=sender, subject=subject, text=text, html=html,
                               headers=_answer_headers(message)))

    # -- reports ------------------------------------------------------------------------------

    def _report(self, session: Session, row: InboundMessage, message: Inbound, decided: Route,
                now: datetime) -> None:
        if message.report_type == "delivery-status" and message.envelope_sender:
            # Mail systems send delivery reports from the null sender (RFC 5321 4.5.5,
            # RFC 3464 2); one with a sender of its own was written by a person.
            row.outcome, row.error = "report", "a delivery report with a sender: not acted on"
            return
        sent = ledger.email_by_id(session=session, message_id=decided.reported) \
            if decided.reported is not None else None
        by_token = sent is not None
        if sent is None:
            named = (message.reported_message_id,) if message.reported_message_id else ()
            addresses = [report.recipient for report in message.reports if report.recipient]
            sent = self._sent_by_message_id(session, addresses[:REPORTED_ADDRESSES], named)
        actions = {report.action for report in message.reports}
        row.outcome = ("complaint" if "complaint" in actions else
                       "bounce" if "failed" in actions else
                       "delay" if "delayed" in actions else "report")
        if sent is None:
            row.error = "reports a message Lifeline cannot find"
            return
        row.thread_kind, row.thread_id, row.account_id = "outbox", str(sent.id), sent.account_id
        if sent.recipient_kind == "contact":
            row.contact_id = sent.recipient_id
        if not by_token and not message.sender.verified:
            # Found by its Message-ID alone, which anyone holding or computing it can name:
            # only a report its sender's domain signs (a provider's DSN or feedback loop,
            # vouched for by the receiving server) acts; this one is recorded.
            row.error = "names a message by Message-ID only, from a sender not vouched for"
            return
        if row.outcome == "bounce":
            status = next((report.status for report in message.reports
                           if report.action == "failed" and report.status), "5.0.0")
            ledger.bounce_reported(session=session, message_id=sent.id, reason=status)
        elif row.outcome == "complaint":
            if sent.recipient_kind == "subscriber" and sent.recipient_id:
                incidents.stop_after_complaint(session=session,
                                               subscriber_id=int(sent.recipient_id), now=now)
            elif sent.recipient_kind == "contact" and sent.recipient_id:
                vault_service.flag_undeliverable(session=session, actor=MAILROOM, now=now,
                                                 bounced_at={sent.recipient_id: sent.created_at})

    # -- threads ------------------------------------------------------------------------------

    def _thread(self, session: Session, message: Inbound, decided: Route) -> Thread | None:
        if decided.thread is not None:
            kind, thread_id = decided.thread
            return self._known_thread(session, message, kind, thread_id, decided.named)
        sender = message.sender.address
        if not sender or not decided.named:
            return None
        sent = self._sent_by_message_id(session, [sender], decided.named)
        if sent is None:
            return None
        if sent.about_kind == "request":
            party = intake.request_party(session=session, reference=sent.about_id)
            return self._known_thread(session, message, "request", party.id,
                                      decided.named) if party else None
        if sent.about_kind == "item":
            return self._known_thread(session, message, "item", sent.about_id, decided.named)
        if sent.recipient_kind == "contact" and sent.recipient_id:
            return self._known_thread(session, message, "contact", sent.recipient_id,
                                      decided.named)
        return None

    def _known_thread(self, session: Session, message: Inbound, kind: str, thread_id: str,
                      named: tuple[str, ...]) -> Thread | None:
        sender = message.sender.address
        if kind == "request":
            party = intake.request_party(session=session, request_id=thread_id)
            if party is None:
                return None
            return Thread("request", party.id, party.account_id, request_id=party.id,
                          party=self._index(sender) == party.email_index)
        if kind == "item":
            try:
                item = escalations.get_item(session=session, item_id=thread_id)
            except NotFound:
                return None
            if item.request_id:
                request = self._known_thread(session, message, "request", item.request_id,
                                             named)
                if request is not None:
                    return Thread("item", item.id, item.account_id, request.party,
                                  request_id=item.request_id, item_id=item.id)
            return Thread("item", item.id, item.account_id, item_id=item.id,
                          contact_id=item.requester_contact_id,
                          party=item.requester_contact_id in self._contacts_of(session, sender))
        if kind == "contact":
            try:
                contact = vault_service.get_contact(session=session, contact_id=thread_id)
            except NotFound:
                return None
            return Thread("contact", contact.id, contact.account_id, contact_id=contact.id,
                          incident_id=self._incident_answered(session, contact.id, named),
                          party=contact.deleted_at is None
                          and contact.id in self._contacts_of(session, sender))
        return None

    def _incident_answered(self, session: Session, contact_id: str,
                           named: tuple[str, ...]) -> str | None:
        """The incident of the update the contact answers: the one its Message-IDs name,
        else the latest update sent to that contact."""
        updates = [sent for sent in ledger.emails_to(session=session, recipient_kind="contact",
                                                     recipient_ids=[contact_id])
                   if sent.about_kind == "update"]
        ids = {outbox.message_id_for(sent.key, self.domain): sent for sent in updates}
        answered = next((ids[name] for name in named if name in ids), None) \
            or (updates[0] if updates else None)
        return incidents.incident_of_update(session=session, update_id=answered.about_id) \
            if answered else None

    def _join(self, session: Session, row: InboundMessage, message: Inbound, thread: Thread,
              now: datetime, *, automatic: bool) -> None:
        row.outcome = "auto_reply" if automatic else "reply"
        row.thread_kind, row.thread_id = thread.kind, thread.id
        row.account_id, row.sender_is_party = thread.account_id, thread.party
        row.request_id, row.item_id, row.contact_id = (thread.request_id, thread.item_id,
                                                       thread.contact_id)
        body = message.shown or message.text
        if thread.request_id:
            author = "auto" if automatic else "customer" if thread.party else "other"
            intake.emailed_by_customer(session=session, intake=self.intake,
                                       request_id=thread.request_id, body=body, author=author,
                                       inbound_id=row.id, message_id=message.message_id,
                                       now=now)
        item_id = thread.item_id
        if thread.request_id and not item_id:
            item_id = escalations.ticket_of_request(session=session, request_id=thread.request_id)
        elif thread.kind == "contact" and thread.account_id:
            # An answer to an update goes to the account's item for the incident, made for
            # it if there is none; an automatic one only joins an item that exists.
            item_id = escalations.item_for_update_reply(
                session=session, desk=self.desk, account_id=thread.account_id,
                incident_id=thread.incident_id, create=not automatic, now=now,
                contact_id=thread.contact_id if thread.party else None)
        if item_id:
            row.item_id = item_id
            escalations.customer_wrote(
                session=session, desk=self.desk, item_id=item_id, now=now,
                written=escalations.Written(
                    body=body, channel="email", as_requester=thread.party, automatic=automatic,
                    verified=message.sender.verified,
                    contact_id=thread.contact_id if thread.party else None,
                    message_id=message.message_id))

    # -- new requests -------------------------------------------------------------------------

    def _request(self, session: Session, row: InboundMessage, message: Inbound,
                 now: datetime) -> None:
        sender = message.sender.address
        if not sender or self._is_ours(sender):
            row.outcome = "ignored"  # nobody to answer, or a loop through our own address
            return
        try:
            reference = intake.receive_email(
                session=session, writer=self.writer, email=sender, name=message.sender.name,
                subject=message.subject, body=message.shown or message.text,
                locale=_locale(message), verified=message.sender.verified, inbound_id=row.id,
                receipt=not message.sender.refuted, now=now)
        except LifelineError as refused:  # an address the form would refuse too
            row.outcome, row.error = "ignored", type(refused).__name__
            return
        party = intake.request_party(session=session, reference=reference)
        row.outcome, row.thread_kind = "request", "request"
        row.thread_id = row.request_id = party.id if party else None
        row.sender_is_party = True

    # -- lookups ------------------------------------------------------------------------------

    def _index(self, address: str | None) -> str | None:
        """The keyed digest of an address, as requests are found by; None for no address."""
        try:
            return intake.address_index(self.intake, address) if address else None
        except LifelineError:
            return None

    def _contacts_of(self, session: Session, address: str | None) -> set[str]:
        if not address:
            return set()
        try:
            return {contact.id for contact in vault_service.find_contacts_by_email(
                session=session, vault=self.vault, email=address)}
        except LifelineError:  # not an address the vault could hold
            return set()

    def _sent_by_message_id(self, session: Session, addresses: list[str],
                            named: tuple[str, ...]) -> ledger.Sent | None:
        """The email Lifeline sent to one of these addresses whose Message-ID is named:
        found through the recipients (requests, contacts and subscribers by their keyed
        digests, then their emails by the recipient index), never by scanning the outbox."""
        if not named:
            return None
        wanted = set(named)
        for address in addresses:
            if self._index(address) is None:
                continue
            references = intake.requests_by_address(session=session, intake=self.intake,
                                                    address=address)
            contacts = self._contacts_of(session, address)
            subscriber = incidents.subscriber_of(session=session, crypto=self.intake.crypto,
                                                 address=address)
            for kind, ids in (("requester", references), ("contact", sorted(contacts)),
                              ("subscriber", [str(subscriber)] if subscriber else [])):
                for sent in ledger.emails_to(session=session, recipient_kind=kind,
                                             recipient_ids=ids):
                    if outbox.message_id_for(sent.key, self.domain) in wanted:
                        return sent
        return None

    def _is_ours(self, address: str) -> bool:
        address = address.lower()
        return any(address.split("@")[-1] == base.lower().split("@")[-1]
                   and address.split("@")[0].split("+")[0] == base.lower().split("@")[0]
                   for base in (self.addresses.reply_to, self.addresses.return_path,
                                self.addresses.sender) if base)


def _answer_headers(message: Inbound) -> dict[str, str]:
    """A note answering an email names it, so the sender's client threads it there."""
    if not message.message_id:
        return {}
    chain = " ".join((*message.references[-10:], message.message_id))
    return {"In-Reply-To": message.message_id, "References": chain}


def _locale(message: Inbound) -> str:
    """The language of the receipt: French when the message says it is in French."""
    language = message.extra.get("content-language", "")
    return "fr" if language.lower().startswith("fr") else "en"
