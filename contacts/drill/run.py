"""The drill: the 2022 deletion replayed against a running Lifeline, over HTTP only, phase by
phase, each phase measured for the report.

1. load the fleet through the sync API, take a backup;  2. the product loses every site;
3. a crowd at the public form, verifying by the codes the SMTP sink receives;  4. the
incident, phone escalations, triage by account;  5. updates on a short cadence while sites
are restored in waves;  6. (local drills) mail comes back: admins answer the first update,
some of its emails bounce late (inbound.py);  7. the backup restored into a fresh database
and checked;  8. (local drills) no vault name, email or phone in clear in the database,
logs, backups or spool.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from urllib.parse import quote

from contacts.drill.client import Client, DrillHttpError
from contacts.drill.crowd import Answered, Crowd
from contacts.drill.fleet import Fleet, build_fleet
from contacts.drill.inbound import Inbound
from contacts.drill.mailstore import Mailstore
from contacts.drill.progress import Say
from contacts.drill.report import Report, percent
from contacts.drill.sink import Received, Sink

SYNC_BATCH = 100
STAGE_BATCH = 2000
STALLED_SECONDS = 120  # no new update email for this long: delivery has stopped (retries
#                        come back after 30 s, then 1 and 2 minutes)


@dataclass(frozen=True)
class Options:
    sites: int = 883
    accounts: int = 775
    stale_share: float = 0.1
    requests: int | None = None  # default: about 40% of the accounts, at most 300
    waves: int = 5
    cadence_seconds: float = 20.0
    seed: int = 2022
    crowd_threads: int = 16
    delivery_timeout: float = 600.0
    inbound_timeout: float = 180.0  # for every reply and late bounce to be acted on

    @property
    def crowd_size(self) -> int:
        return self.requests if self.requests is not None else min(300, max(
            30, self.accounts * 2 // 5))


@dataclass
class Drill:
    client: Client
    sink: Sink
    options: Options
    report: Report
    say: Say = field(default_factory=Say)
    scan: Callable[[list[str]], tuple[str, int, list[str]]] | None = None  # local drills
    mailstore: Mailstore | None = None  # local drills: Lifeline's [inbound] mailbox
    fleet: Fleet | None = None
    answers: list[Answered] = field(default_factory=list)
    incident_id: str = ""
    incident_opened: float = 0.0

    def run(self) -> Report:
        started = time.monotonic()
        rng = random.Random(self.options.seed)  # noqa: S311 - a replayable scenario
        self.fleet = build_fleet(accounts=self.options.accounts, sites=self.options.sites,
                                 stale_share=self.options.stale_share, rng=rng)
        self.sink.dead = self.fleet.dead_addresses()
        self.report.sites = len(self.fleet.sites)
        self.report.accounts = len(self.fleet.accounts)
        self.report.contacts = len(self.fleet.contacts)
        self.report.stale_contacts = len(self.sink.dead)
        self.load_and_back_up()
        self.delete_the_product_side()
        self.crowd_at_the_form(rng)
        self.open_the_incident_and_triage(rng)
        self.publish_updates_while_restoring()
        self.answer_and_bounce_by_mail()
        self.restore_the_vault()
        self.scan_for_plaintext()
        self.report.seconds = round(time.monotonic() - started, 1)
        return self.report

    # -- 1 -------------------------------------------------------------------------------
    def load_and_back_up(self) -> None:
        fleet = self.fleet
        self.say.phase(1, f"Loading {len(fleet.accounts)} accounts, {len(fleet.sites)} sites, "
                          f"{len(fleet.contacts)} contacts through the sync API")
        started = time.monotonic()
        for start in range(0, len(fleet.accounts), SYNC_BATCH):
            batch = fleet.accounts[start:start + SYNC_BATCH]
            tally = self.client.api("POST", "/api/v1/sync",
                                    {"accounts": [account.sync_entry() for account in batch]})
            if tally["rejections"]:
                raise DrillHttpError(f"the sync rejected entries: {tally['rejections'][:3]}")
            self.say.step(f"{min(start + SYNC_BATCH, len(fleet.accounts))}/"
                          f"{len(fleet.accounts)} accounts synced")
        self.report.sync_seconds = round(time.monotonic() - started, 2)
        for account in fleet.accounts:  # Lifeline's own IDs, to check matching later
            account.id = self._account_of(account.contacts[0].email)
        backup = self.client.api("POST", "/api/v1/backups", {}, expect=(201,))
        self.report.backup_name = backup["name"]
        self.report.backup_rows = backup["rows"]
        self.say.done(f"backup {backup['name']}, {backup['rows']} rows")

    def _account_of(self, email: str) -> str | None:
        found = self.client.api("GET", "/api/v1/contacts/lookup?email="
                                + quote(email, safe=""))["matches"]
        return found[0]["account_id"] if found else None

    # -- 2 -------------------------------------------------------------------------------
    def delete_the_product_side(self) -> None:
        self.say.phase(2, "The product deletes every site and its own copy of the contacts")
        for site in self.fleet.sites:  # what the product knew is gone; the drill forgets it
            site.url = ""
        sample = self.fleet.accounts[:: max(1, len(self.fleet.accounts) // 20)]
        found = sum(1 for account in sample
                    if self._account_of(account.contacts[-1].email) == account.id)
        self.report.vault_answers_after_deletion = f"{found}/{len(sample)}"
        self.say.done(f"the vault still knows {found}/{len(sample)} sampled contacts")

    # -- 3 -------------------------------------------------------------------------------
    def crowd_at_the_form(self, rng: random.Random) -> None:
        self.answers = Crowd(self.client, self.sink, self.report, self.say, self.fleet,
                             size=self.options.crowd_size,
                             threads=self.options.crowd_threads).gather(rng)

    # -- 4 -------------------------------------------------------------------------------
    def open_the_incident_and_triage(self, rng: random.Random) -> None:
        self.say.phase(4, "Opening the incident; escalations by phone; triage by account")
        incident = self.client.api("POST", "/api/v1/incidents", {
            "title": f"Deletion of {len(self.fleet.sites)} sites", "severity": "critical"},
            expect=(201,))
        self.incident_id = incident["id"]
        self.incident_opened = time.monotonic()
        self.report.incident_id = self.incident_id
        sites = [site.external_id for site in self.fleet.sites]
        for start in range(0, len(sites), STAGE_BATCH):
            self.client.api("POST", f"/api/v1/incidents/{self.incident_id}/sites",
                            {"sites": sites[start:start + STAGE_BATCH]}, expect=(200, 201))
        callers = rng.sample(self.fleet.accounts, max(2, len(self.fleet.accounts) // 20))
        logged = []
        for account in callers:
            item = self.client.api("POST", "/api/v1/items", {
                "account_id": account.id, "kind": "escalation", "channel": "phone",
                "title": f"{account.name} called: every site is gone", "priority": 1,
                "incident_id": self.incident_id}, expect=(201,))
            logged.append((account, item["id"]))
        self.report.escalations_logged = len(logged)
        self.say.step(f"{len(logged)} phone escalations logged; reading the queue by account")
        time.sleep(3)  # the escalations job turns the new requests into tickets every second
        by_account: dict[str, set[str]] = {}
        for item in self._all_items():
            if item["account_id"]:
                by_account.setdefault(item["account_id"], set()).add(item["id"])
        self.report.escalations_under_their_account = sum(
            1 for account, item_id in logged if item_id in by_account.get(account.id, ()))
        self.report.accounts_with_work_items = len(by_account)
        self.report.work_items = sum(len(items) for items in by_account.values())
        self.say.done(f"{self.report.work_items} work items under "
                      f"{self.report.accounts_with_work_items} accounts")

    def _all_items(self) -> list[dict]:
        items, offset = [], 0
        while True:
            page = self.client.api("GET", f"/api/v1/items?status=all&limit=500&offset={offset}")
            items += page["items"]
            offset += 500
            if offset >= page["total"] or not page["items"]:
                return items

    # -- 5 -------------------------------------------------------------------------------
    def publish_updates_while_restoring(self) -> None:
        options = self.options
        self.say.phase(5, f"Updates every {options.cadence_seconds:g} s while sites are "
                          f"restored in {options.waves} waves")
        published: list[dict] = []
        promised: datetime | None = None
        sites = [site.external_id for site in self.fleet.sites]
        self._publish(published, final=False)
        promised = _moment(published[-1]["next_update_at"])
        self._record_progress()
        for wave in range(1, options.waves + 1):
            time.sleep(options.cadence_seconds / 2)
            share = sites[len(sites) * (wave - 1) // options.waves:
                          len(sites) * wave // options.waves]
            for stage in ("data_restored", "validated_by_us"):
                for start in range(0, len(share), STAGE_BATCH):
                    self.client.api("POST", f"/api/v1/incidents/{self.incident_id}/progress",
                                    {"sites": [{"site": site, "stage": stage}
                                               for site in share[start:start + STAGE_BATCH]]})
            percentage = self._record_progress()
            final = wave == options.waves
            self._publish(published, final=final)
            if promised is not None and _moment(published[-1]["published_at"]) > promised:
                self.report.updates_late += 1
            promised = None if final else _moment(published[-1]["next_update_at"])
            self.say.step(f"wave {wave}: {percentage:.1f}% restored, update "
                          f"{len(published)} published")
        self.report.updates_published = len(published)
        self.say.step("waiting for the outbox to deliver every update")
        self._wait_for_delivery(len(published))
        self._count_reach()
        self.report.sla_breaches = self.client.api(
            "GET", "/api/v1/items?status=all&sla=breached&limit=1")["total"]
        incident = self.client.api("GET", f"/api/v1/incidents/{self.incident_id}")
        # Lifeline's own view, beside the drill's: an update whose promise was broken, and a
        # promise still open and past due at the end.
        self.report.updates_late = max(self.report.updates_late,
                                       sum(1 for update in incident["updates"] if update["late"]))
        self.report.updates_missed = 1 if incident["late"] else 0
        self.report.late_warnings = sum(1 for m in self.sink.messages()
                                        if m.recipient.startswith("comms@"))
        r = self.report
        self.say.done(f"reached {r.admins_reached}/{r.admins_reachable} admins, "
                      f"{r.updates_late} late, {r.updates_missed} missed")

    def _publish(self, published: list[dict], *, final: bool) -> None:
        number = len(published) + 1
        now = datetime.now(UTC)
        next_update = now + timedelta(seconds=self.options.cadence_seconds)
        draft = {
            "state": "resolved" if final else "identified",
            "what_happened": "A maintenance script deleted customer sites and the product's "
                             "copy of their admin contacts.",
            "timeline": ("Every site is restored." if final else
                         f"Sites are restored in waves; update {number + 1} by "
                         f"{next_update:%H:%M:%S} UTC."),
            "data_loss": "Changes made in the 5 minutes before the deletion.",
            "confidence_timeline": "high" if final else "medium",
            "confidence_restore": "high",
            "confidence_data_loss": "high",
        }
        if not final:
            draft["next_update_at"] = next_update.isoformat()
        update = self.client.api("POST", f"/api/v1/incidents/{self.incident_id}/updates",
                                 draft, expect=(201,))
        published.append(update)

    def _record_progress(self) -> float:
        incident = self.client.api("GET", f"/api/v1/incidents/{self.incident_id}")
        percentage = float(incident["restore_percentage"])
        self.report.restore_curve.append(
            (round(time.monotonic() - self.incident_opened, 1), percentage))
        return percentage

    def _update_mail(self) -> list[Received]:
        return [m for m in self.sink.messages() if self.incident_id in m.list_id]

    def _wait_for_delivery(self, updates: int) -> None:
        """Until every update reached every live contact, or the sink stops growing."""
        live = [c.email for c in self.fleet.contacts if not c.stale]
        expected = updates * len(live)
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + self.options.delivery_timeout
        while time.monotonic() < deadline:
            count = len(self._update_mail())
            if count >= expected:
                break
            if count != last:
                last, still_since = count, time.monotonic()
                self.say.step(f"{count}/{expected} update emails delivered")
            elif time.monotonic() - still_since > STALLED_SECONDS:
                break
            time.sleep(1)

    def _count_reach(self) -> None:
        mail = self._update_mail()
        first = min((m.at for m in mail), default=None)
        r = self.report
        r.time_to_first_update_s = (round(first - self.incident_opened, 1)
                                    if first is not None else None)
        reached = {m.recipient for m in mail}
        r.update_emails = len(mail)
        r.bounces = self.sink.refused
        reachable = [(account, contact) for account in self.fleet.accounts
                     for contact in account.contacts if not contact.stale]
        r.admins_reachable = len(reachable)
        r.admins_reached = sum(1 for _, contact in reachable
                               if contact.email.lower() in reached)
        r.admins_reached_pct = percent(r.admins_reached, r.admins_reachable)
        accounts = {account.external_id for account, _ in reachable}
        r.accounts_reachable = len(accounts)
        r.accounts_reached = len({account.external_id for account, contact in reachable
                                  if contact.email.lower() in reached})

    # -- 6 -------------------------------------------------------------------------------
    def answer_and_bounce_by_mail(self) -> None:
        if self.mailstore is None:
            self.say.phase(6, "Inbound mail: not possible against a remote Lifeline (its "
                              "mailboxes are not the drill's)")
            return
        self.say.phase(6, "Inbound mail: admins answer the first update, some of its emails "
                          "bounce late")
        self.report.inbound_run = True
        inbound = Inbound(self.client, self.mailstore, self.fleet, self.report, self.say,
                          self.incident_id, timeout=self.options.inbound_timeout)
        inbound.run(self._first_update_mail(),
                    random.Random(f"{self.options.seed}-inbound"))  # noqa: S311
        r = self.report
        self.say.done(f"{r.replies_threaded}/{r.replies_sent} replies threaded, "
                      f"{r.late_bounces_acted}/{r.late_bounces_sent} late bounces acted on")

    def _first_update_mail(self) -> list[Received]:
        """Each recipient's email of the first update: the one that answers no earlier one."""
        first: dict[str, Received] = {}
        for message in self._update_mail():
            head = BytesHeaderParser().parsebytes(message.content, headersonly=True)
            if not head.get("In-Reply-To") and message.recipient not in first:
                first[message.recipient] = message
        return list(first.values())

    # -- 7 -------------------------------------------------------------------------------
    def restore_the_vault(self) -> None:
        self.say.phase(7, f"Restoring backup {self.report.backup_name} into a fresh database")
        result = self.client.api("POST", "/api/v1/backups/drill",
                                 {"snapshot": self.report.backup_name})
        r = self.report
        r.vault_restore_ok = bool(result["ok"])
        r.vault_restore_s = float(result["seconds"]) if result["ok"] else None
        r.vault_restore_rows = int(result.get("rows") or 0)
        r.vault_restore_detail = result.get("detail", "")
        self.say.done(f"{'passed' if r.vault_restore_ok else 'FAILED'}: {r.vault_restore_detail}")

    # -- 8 -------------------------------------------------------------------------------
    def scan_for_plaintext(self) -> None:
        if self.scan is None:
            self.say.phase(8, "Plaintext scan: not possible against a remote Lifeline")
            return
        self.say.phase(8, "Scanning the database, logs, backups, spool and rate-limit keys for "
                          "plaintext")
        scanned, hits, where = self.scan(self.fleet.personal_values())
        self.report.plaintext_scanned = scanned
        self.report.plaintext_hits = hits
        self.report.plaintext_where = where
        self.say.done(f"{hits} hits")


TOKENS = re.compile(rb"[A-Za-z0-9._%+\-@\x80-\xff]+")  # emails, phones, UTF-8 words


def scan_bytes(values: list[str], places: dict[str, bytes]) -> tuple[str, int, list[str]]:
    """How many of `values` occur in any of `places` (and where), as UTF-8 bytes. Emails and
    phones are looked up among each place's tokens (one pass); names, which hold a space,
    are searched for one by one (a few hundred distinct ones)."""
    needles = {value.encode() for value in values if value}
    single = {needle for needle in needles if b" " not in needle}
    spaced = needles - single
    hits, where = 0, []
    for name, content in places.items():
        tokens = set(TOKENS.findall(content))
        tokens |= {token.strip(b".-") for token in tokens}
        found = len(single & tokens) + sum(1 for needle in spaced if needle in content)
        if found:
            hits += found
            where.append(f"{name} ({found})")
    size = sum(len(content) for content in places.values())
    scanned = (f"{len(needles)} distinct names, emails, phones and domains searched in "
               f"{len(places)} places ({size / 1_000_000:.1f} MB: {', '.join(places)})")
    return scanned, hits, where


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
