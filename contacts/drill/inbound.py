"""The drill's inbound phase: mail comes back. Some admins answer the first update from their
mail client (to its Reply-To), and some update emails bounce late: the customer's relay took
them, then its mailbox server refused them, and Postfix returns each to its envelope sender
(the VERP return path). Both are APPENDed into the Dovecot that Lifeline reads as its
`[inbound]` mailbox; the drill then watches, over the API only, that each reply reached its
account's item for the incident and each late bounce marked its email failed, with a call
task for an account all of whose emails bounced."""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from contacts.drill.client import Client
from contacts.drill.fleet import Account, Contact, Fleet
from contacts.drill.letters import postfix_bounce, thunderbird_reply
from contacts.drill.mailstore import Mailstore
from contacts.drill.progress import Say
from contacts.drill.report import Report, percent
from contacts.drill.sink import Received

REPLY_SHARE = 0.1  # of the accounts reached, one admin answers the first update
BOUNCE_SHARE = 0.05  # of the first update's recipients, the email bounces late
REPLY_TEXT = ("Thank you for the update. Our shop has been offline since this morning and our "
              "customers are asking; please tell us as soon as our site is back. (Drill "
              "reference {marker}.)")


@dataclass
class Reply:
    account: Account
    contact: Contact
    marker: str  # a random word in the reply's own text, looked for in the item's history
    threaded: bool = False


@dataclass
class Bounce:
    account: Account
    contact: Contact
    contact_id: str | None = None  # Lifeline's ctc_ ID, learnt by a lookup
    acted_on: bool = False


@dataclass
class Inbound:
    client: Client
    mailstore: Mailstore
    fleet: Fleet
    report: Report
    say: Say
    incident_id: str
    timeout: float = 180.0
    replies: list[Reply] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)
    all_bounced: Account | None = None  # its call task is looked for too
    _tasks_before: int = 0

    def run(self, first_update: list[Received], rng: random.Random) -> None:
        started = time.monotonic()
        by_email = {contact.email.lower(): (account, contact)
                    for account in self.fleet.accounts for contact in account.contacts}
        delivered = {m.recipient: m for m in first_update if m.recipient in by_email}
        self._choose(delivered, by_email, rng)
        if self.all_bounced is not None:
            self.report.calls_expected = 1
            self._tasks_before = self._call_tasks(self.all_bounced.id)
        letters = [thunderbird_reply(delivered[r.contact.email.lower()].content,
                                     sender=f"{r.contact.name} <{r.contact.email}>",
                                     body=REPLY_TEXT.format(marker=r.marker))
                   for r in self.replies]
        for bounce in self.bounces:
            sent = delivered[bounce.contact.email.lower()]
            letters.append(postfix_bounce(sent.content, return_path=sent.envelope_sender,
                                          recipient=bounce.contact.email))
        rng.shuffle(letters)
        self.mailstore.append(letters)
        r = self.report
        r.replies_sent, r.late_bounces_sent = len(self.replies), len(self.bounces)
        whole = (f"every email of one account's {len(self.all_bounced.contacts)} admins"
                 if self.all_bounced else "no account all of whose admins got it")
        self.say.step(f"{len(self.replies)} answers to the first update and "
                      f"{len(self.bounces)} late bounces ({whole}) delivered into the mailbox")
        self._wait(started)
        r.replies_threaded = sum(1 for reply in self.replies if reply.threaded)
        # Nothing sent measures nothing: left None, so the target is missed, not met.
        r.replies_threaded_pct = percent(r.replies_threaded, r.replies_sent) \
            if r.replies_sent else None
        r.late_bounces_acted = sum(1 for bounce in self.bounces if bounce.acted_on)
        r.late_bounces_acted_pct = percent(r.late_bounces_acted, r.late_bounces_sent) \
            if r.late_bounces_sent else None
        r.inbound_failed = self.mailstore.count_folder("Lifeline", "Failed")
        r.inbound_seconds = round(time.monotonic() - started, 1)

    def _choose(self, delivered: dict[str, Received], by_email: dict, rng: random.Random
                ) -> None:
        """One account whose every admin got the first update bounces them all (it must be
        called); a share of the other recipients bounce, at most one an account and never
        an account's only reached admin (those accounts stay reached); a share of the
        accounts have one other reached admin answer."""
        reached: dict[str, list[Contact]] = {}
        for address in sorted(delivered):
            account, contact = by_email[address]
            reached.setdefault(account.external_id, []).append(contact)
        accounts = {account.external_id: account for account in self.fleet.accounts}
        whole = sorted(external_id for external_id, contacts in reached.items()
                       if len(contacts) == len(accounts[external_id].contacts))
        whole = [external_id for external_id in whole if len(reached[external_id]) > 1] or whole
        if whole:
            self.all_bounced = accounts[rng.choice(whole)]
            self.bounces = [Bounce(self.all_bounced, contact)
                            for contact in self.all_bounced.contacts]
        others = [external_id for external_id in sorted(reached)
                  if self.all_bounced is None or external_id != self.all_bounced.external_id]
        wanted = max(1, round(BOUNCE_SHARE * len(delivered))) - len(self.bounces)
        several = [external_id for external_id in others if len(reached[external_id]) > 1]
        for external_id in rng.sample(several, min(max(wanted, 1), len(several))):
            self.bounces.append(Bounce(accounts[external_id], rng.choice(reached[external_id])))
        bounced = {bounce.contact.email for bounce in self.bounces}
        answering = max(1, round(REPLY_SHARE * len(reached)))
        for external_id in rng.sample(others, min(answering, len(others))):
            candidates = [c for c in reached[external_id] if c.email not in bounced]
            if candidates:
                self.replies.append(Reply(accounts[external_id], rng.choice(candidates),
                                          marker=secrets.token_hex(6)))

    def _wait(self, started: float) -> None:
        """Until every reply is on its item and every bounce acted on, or the timeout."""
        deadline = started + self.timeout
        last = None
        for bounce in self.bounces:
            bounce.contact_id = self._contact_id(bounce)
        while time.monotonic() < deadline:
            waiting = self.mailstore.count_folder("INBOX")
            for reply in self.replies:
                reply.threaded = reply.threaded or self._on_its_item(reply)
            self._check_bounces()
            threaded = sum(1 for reply in self.replies if reply.threaded)
            acted = sum(1 for bounce in self.bounces if bounce.acted_on)
            now = (waiting, threaded, acted)
            if now != last:
                self.say.step(f"{waiting} emails not read yet; {threaded}/{len(self.replies)} "
                              f"replies on their item, {acted}/{len(self.bounces)} late "
                              "bounces acted on")
                last = now
            if threaded == len(self.replies) and acted == len(self.bounces):
                return
            time.sleep(1)

    def _contact_id(self, bounce: Bounce) -> str | None:
        found = self.client.api("GET", "/api/v1/contacts/lookup?email="
                                + quote(bounce.contact.email, safe=""))["matches"]
        return next((match["id"] for match in found
                     if match["account_id"] == bounce.account.id), None)

    def _on_its_item(self, reply: Reply) -> bool:
        """The reply's text is in the history of an item of its account for the incident, as
        the requester's own answer (the admin the update went to, vouched for by the MX)."""
        items = self.client.api("GET", f"/api/v1/items?status=all&limit=50&account="
                                       f"{reply.account.id}&incident={self.incident_id}")
        for item in items["items"]:
            detail = self.client.api("GET", f"/api/v1/items/{item['id']}")
            if any(event["kind"] == "customer_reply" and "unverified" not in event["detail"]
                   and reply.marker in (event["body"] or "") for event in detail["history"]):
                return True
        return False

    def _check_bounces(self) -> None:
        """Each bounced contact's first update email is failed and bounced in the account's
        proof of delivery; the account all of whose emails bounced has its call task."""
        pending: dict[str, list[Bounce]] = {}
        for bounce in self.bounces:
            if not bounce.acted_on:
                pending.setdefault(bounce.account.id, []).append(bounce)
        for account_id, bounces in pending.items():
            proof = self.client.api("GET", f"/api/v1/incidents/{self.incident_id}/accounts/"
                                           f"{account_id}/deliveries")["deliveries"]
            bounced = {row["recipient"] for row in proof if row["update_number"] == 1
                       and row["state"] == "failed" and row["failure"] == "bounced"}
            called = True
            if self.all_bounced is not None and account_id == self.all_bounced.id:
                called = self._call_task_opened(account_id)
                self.report.calls_opened = int(called)
            for bounce in bounces:
                bounce.acted_on = bounce.contact_id in bounced and called

    def _call_task_opened(self, account_id: str) -> bool:
        return self._call_tasks(account_id) > self._tasks_before

    def _call_tasks(self, account_id: str) -> int:
        return self.client.api("GET", f"/api/v1/items?status=all&kind=task&limit=1&account="
                                      f"{account_id}&incident={self.incident_id}")["total"]
