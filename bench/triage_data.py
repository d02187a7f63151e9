"""The data behind bench/triage.py: accounts in the vault and work items under them.

    generate(app, accounts=10_000, items=100_000)

Accounts (a few sites, 2-3 contacts each) go through the vault's one upsert path,
`vault.sync.sync`, as an import would. Work items are built in memory by the escalations
service's own functions (`_set_targets` for the SLA targets, `_move` for each status change,
`_follow_clock` and `sla_state` for how each item stands), as if staff had created and worked
them over the past year, and are then written with `db.bulk_insert` (items and their events,
a batch at a time). Titles, bodies and comments are sealed with the app's cipher under their
column contexts. Nothing here is what production would see exactly, but every row is one the
service could have written:

- kinds, channels, priorities and statuses in fixed shares (about half the items open);
- items per account skewed (a few accounts with hundreds, most with a handful);
- regions: the one on shift at creation, or (half the items staff log) the account's home
  region; some items handed on at a shift change;
- owners among a few support staff (most closed items owned, two thirds of open ones);
- requesters: public-form tickets carry a request ID and its verification; phone and email
  items often name one of the account's contacts;
- SLA: first responses and resolutions mostly on time, some late; open items are then
  marked at risk or breached as the SLA job would (with its event);
- events: created, owner, status changes, comments, replies, hand-offs, SLA: 3-5 per item.

No support requests, incidents or outbox rows are generated: the account page's timeline
reads them with one indexed query each, which finds nothing here.
"""

from __future__ import annotations

import random
import sys
import time
from bisect import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate

from sqlalchemy import select

from contacts.core.audit import Actor
from contacts.core.db import bulk_insert, session_scope, utcnow
from contacts.core.ids import new_id
from contacts.core.services import services
from contacts.escalations import clock as sla_clock
from contacts.escalations import items as work_items
from contacts.escalations import service as escalations
from contacts.escalations.desk import record_event, worked
from contacts.escalations.follow import SEVERITY_TITLES
from contacts.escalations.models import (
    ITEM_BODY,
    ITEM_TITLE,
    AccountProfile,
    ItemEvent,
    WorkItem,
)
from contacts.escalations.service import SupportDesk
from contacts.intake.references import new_reference
from contacts.staff import service as staff_service
from contacts.vault import sync as vault_sync
from contacts.vault.models import Account, Contact
from contacts.vault.schemas import AccountIn
from tests.helpers import PASSWORD  # the tests' staff password

SUPPORT_STAFF = 6  # the owners; the bench signs in as the first
SIGN_IN_EMAIL = "support1@staff.example.com"
OTHER_STAFF = (("admin", 1), ("comms", 2))
BATCH = 2000  # items per transaction (with their events)

# Shares, as (value, weight).
KIND_MIX = (("ticket", 70), ("escalation", 20), ("task", 10))
CHANNEL_MIX = {
    "ticket": (("web_form", 45), ("email", 35), ("phone", 15), ("social", 5)),
    "escalation": (("phone", 40), ("executive", 25), ("email", 20), ("partner", 15)),
    "task": (("internal", 100),),
}
PRIORITY_MIX = {
    "ticket": ((1, 4), (2, 14), (3, 52), (4, 30)),
    "escalation": ((1, 15), (2, 35), (3, 40), (4, 10)),
    "task": ((1, 2), (2, 10), (3, 48), (4, 40)),
}
STATUS_MIX = (("new", 8), ("triaged", 12), ("in_progress", 20), ("waiting_on_customer", 10),
              ("resolved", 12), ("closed", 38))
REGION_MIX = (("APAC", 25), ("EMEA", 40), ("AMER", 35))  # accounts' home regions
HOME_REGION_SHARE = 0.5  # items staff log in the account's home region (else: on shift)
VERIFICATION_MIX = (("unverified", 35), ("email_verified", 40), ("authorized", 20),
                    ("callback_confirmed", 5))
# How long open items have been open, by priority (hours), and new (untouched) ones.
# How far open items are into their running SLA target (the share of it used by now, in the
# target's own time: business minutes for P3 and P4): (share, low, high), drawn uniformly.
ELAPSED_MIX = ((0.74, 0.02, 0.75), (0.13, 0.75, 1.0), (0.13, 1.0, 2.5))
WAITING_ELAPSED = (0.05, 1.2)
LATE_FIRST_RESPONSE = 0.10  # answered items whose first response came after its target
STALE_SHARE = 0.04  # open items forgotten for up to two months
SLOT = timedelta(minutes=5)  # the grid of the business-time tables
HORIZON = timedelta(days=70)
PROFILE_SHARE = 0.08  # accounts with their own support hours
PROFILES = (("Europe/Paris", "mon-fri 09:00-18:00"), ("America/New_York", "mon-fri 08:00-18:00"),
            ("Asia/Tokyo", "mon-fri 09:00-17:30"), ("Australia/Sydney", "mon-fri 08:30-17:00"),
            ("America/Los_Angeles", "mon-sat 07:00-19:00"), ("UTC", "mon-sun 00:00-23:59"))

WORDS_A = ("Acme", "Blue", "Cedar", "Delta", "Echo", "Falcon", "Granite", "Harbor", "Iris",
           "Juniper", "Kestrel", "Lumen", "Maple", "North", "Orchid", "Pine", "Quartz", "River",
           "Summit", "Tidal", "Umber", "Vale", "Willow", "Zephyr")
WORDS_B = ("Gardens", "Bakery", "Logistics", "Studio", "Clinic", "Outfitters", "Labs", "Media",
           "Travel", "Foods", "Dental", "Legal", "Motors", "Books", "Fitness", "Realty")
SUFFIXES = ("", " Ltd", " Inc", " GmbH", " SAS", " & Co", " Group", " Pty")
FIRST = ("Ada", "Bob", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inès", "Jamal",
         "Kofi", "Lena", "Mateo", "Nora", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tariq")
LAST = ("Martin", "Smith", "Garcia", "Müller", "Okafor", "Tanaka", "Dubois", "Kowalski",
        "Nguyen", "Silva", "Haddad", "Larsen", "O'Brien", "Rossi", "Kim", "Patel")
ROLES = (("site_admin", 40), ("technical", 25), ("billing", 20), ("other", 15))
LOCALES = (("en", "America/New_York"), ("en", "Europe/London"), ("fr", "Europe/Paris"),
           ("en", "Australia/Sydney"), ("en", "America/Los_Angeles"), ("fr", "America/Montreal"))
TITLES = {
    "ticket": ("Site shows a white page after the plugin update", "Cannot sign in to the admin",
               "Checkout fails with a payment error", "Emails from the contact form not arriving",
               "SSL certificate warning on {host}", "DNS change not taking effect for {host}",
               "Backup restore asked for {host}", "Invoice shows the wrong plan",
               "Slow pages since Monday on {host}", "How do I add a staff account?"),
    "escalation": ("Executive escalation: {host} down during a sale",
                   "Partner reports data loss on {host}", "Repeated outage on {host}, third time",
                   "Customer threatening to cancel over {host}", "Legal asks about a deleted site"),
    "task": ("Call back the site admin of {host}", "Check the restore of {host} finished",
             "Review the account's contacts", "Follow up on the migration of {host}",
             "Prepare the post-incident note"),
}
BODIES = ("The customer called at {t:%H:%M} and said the site had been down since the morning.",
          "Forwarded by the account manager; the customer wants an answer today.",
          "Steps tried: cache cleared, plugins disabled, still failing on {host}.",
          "They need this before their campaign starts on Friday.")
COMMENTS = ("Reproduced on staging, looking at the logs.", "Waiting for the hosting team.",
            "Asked the customer for a screenshot.", "Same root cause as last week's item.",
            "Escalated to the platform team.")
REPLIES = ("Thanks for reporting this, we are looking into it now.",
           "We found the cause and are working on a fix; next update within the hour.",
           "Could you tell us which page shows the error?")


def _chooser(pairs):
    values = [value for value, _ in pairs]
    cumulative = list(accumulate(weight for _, weight in pairs))

    def choose(rng: random.Random):
        return values[bisect(cumulative, rng.random() * cumulative[-1])]

    return choose


KIND = _chooser(KIND_MIX)
CHANNEL = {kind: _chooser(mix) for kind, mix in CHANNEL_MIX.items()}
PRIORITY = {kind: _chooser(mix) for kind, mix in PRIORITY_MIX.items()}
STATUS = _chooser(STATUS_MIX)
VERIFICATION = _chooser(VERIFICATION_MIX)
REGION = _chooser(REGION_MIX)
ROLE = _chooser(ROLES)


class Progress:
    """One line rewritten in place on a terminal; elsewhere, the last figure of each phase."""

    def __init__(self, enabled: bool | None = None):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.label, self.total, self.done, self.started, self.shown = "", 0, 0, 0.0, 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.shown = time.perf_counter()
        self._show(force=True)

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.tty or (not force and now - self.shown < 0.2 and self.done < self.total):
            return
        self.shown = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0
        share = f" {100 * self.done / self.total:5.1f}%" if self.total else ""
        sys.stderr.write(f"\r  {self.label}: {self.done:,}/{self.total:,}{share}"
                         f" ({rate:,.0f}/s, {elapsed:.0f} s)\x1b[K")
        sys.stderr.flush()

    def finish(self) -> float:
        elapsed = time.perf_counter() - self.started
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        print(f"  {self.label}: {self.done:,} in {elapsed:.1f} s")
        return elapsed


@dataclass
class Generated:
    support_staff: list[tuple[str, str]]  # (ID, email); the first is the bench's sign-in
    account_ids: list[str]
    items_per_account: dict[str, int]
    items: int = 0
    events: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    open_by_sla: dict[str, int] = field(default_factory=dict)
    open_by_region: dict[str, int] = field(default_factory=dict)
    open_by_owner: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def generate(app, *, accounts: int, items: int, seed: int = 7,
             progress: Progress | None = None) -> Generated:
    progress = progress or Progress()
    started = time.perf_counter()
    rng = random.Random(seed)
    engine = services(app).engine
    desk: escalations.SupportDesk = services(app).get(SupportDesk)
    staff = _staff(app, engine)
    account_ids, contacts, hosts = _vault(engine, desk, accounts, rng, progress)
    profiles = _profiles(engine, account_ids, rng)
    made = Generated(support_staff=staff, account_ids=account_ids, items_per_account={})
    home = {account_id: REGION(rng) for account_id in account_ids}
    world = _World(desk, utcnow(), [staff_id for staff_id, _ in staff], contacts, hosts,
                   home, profiles)
    _items(engine, world, made, items, rng, progress)
    made.seconds = time.perf_counter() - started
    return made


def _staff(app, engine) -> list[tuple[str, str]]:
    crypto = services(app).crypto
    roles = [("support", SUPPORT_STAFF), *OTHER_STAFF]
    support = []
    with session_scope(engine) as session:
        for role, count in roles:
            for number in range(1, count + 1):
                email = f"{role}{number}@staff.example.com"
                created = staff_service.create_staff(
                    session=session, crypto=crypto, actor=Actor.system("bench"), email=email,
                    role=role, password=PASSWORD, min_password_length=12)
                if role == "support":
                    support.append((created.id, email))
    return support


def _account_document(number: int, rng: random.Random, serial: list[int]) -> dict:
    name = (f"{rng.choice(WORDS_A)} {rng.choice(WORDS_B)}{rng.choice(SUFFIXES)}"
            f" {number:05d}")
    sites = []
    for site in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4))):
        host = f"{'www' if site == 0 else f'shop{site}'}.a{number:05d}.example.net"
        sites.append({"external_id": f"S{number:05d}-{site}", "url": f"https://{host}",
                      "name": f"{name.split()[0]} site {site + 1}"})
    people = []
    for _ in range(rng.choice((2, 2, 3))):
        serial[0] += 1
        first, last = rng.choice(FIRST), rng.choice(LAST)
        locale, zone = rng.choice(LOCALES)
        phone = (f"+33 6 {serial[0] // 10000 % 100:02d} {serial[0] // 100 % 100:02d} "
                 f"{serial[0] % 100:02d} 00" if locale == "fr"
                 else f"+1 415 {200 + serial[0] // 10000 % 700:03d} {serial[0] % 10000:04d}")
        linked = [site["external_id"] for site in sites if rng.random() < 0.7] or \
            [sites[0]["external_id"]]
        people.append({"external_id": f"C{serial[0]:07d}", "name": f"{first} {last}",
                       "email": f"{first.lower()}.{serial[0]}@a{number:05d}.example.net"
                       .replace("é", "e").replace("è", "e"),
                       "phone": phone if rng.random() < 0.8 else None,
                       "role": ROLE(rng), "locale": locale, "timezone": zone,
                       "sites": linked})
    return {"external_id": f"A{number:05d}", "name": name, "sites": sites, "contacts": people}


def _vault(engine, desk, accounts: int, rng: random.Random, progress: Progress
           ) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    serial = [0]
    documents = [_account_document(number, rng, serial) for number in range(accounts)]
    entries = [vault_sync.AccountEntry.from_document(AccountIn.model_validate(doc), index)
               for index, doc in enumerate(documents)]
    progress.start("vault sync (accounts, sites, contacts)", serial[0])
    with session_scope(engine) as session:
        report = vault_sync.sync(session=session, vault=desk.vault,
                                 actor=Actor.system("bench"), entries=entries,
                                 source="import", progress=progress.advance, parallel=True)
    progress.finish()
    if report.rejections:
        raise RuntimeError(f"the vault rejected {len(report.rejections)} entries, first: "
                           f"{report.rejections[0]}")
    by_external_id = {doc["external_id"]: doc for doc in documents}
    with engine.connect() as connection:
        accounts = list(connection.execute(select(Account.id, Account.external_id)
                                           .order_by(Account.external_id)))
        contacts: dict[str, list[str]] = {}
        for contact_id, account_id in connection.execute(select(Contact.id,
                                                                Contact.account_id)):
            contacts.setdefault(account_id, []).append(contact_id)
    hosts = {account_id: [site["url"][8:] for site in by_external_id[external_id]["sites"]]
             for account_id, external_id in accounts}  # for titles
    return [account_id for account_id, _ in accounts], contacts, hosts


def _profiles(engine, account_ids: list[str], rng: random.Random) -> dict[str, AccountProfile]:
    now = utcnow()
    chosen = rng.sample(account_ids, int(len(account_ids) * PROFILE_SHARE))
    profiles = {}
    for account_id in chosen:
        zone, hours = rng.choice(PROFILES)
        profiles[account_id] = AccountProfile(account_id=account_id, timezone=zone,
                                              business_hours=hours, updated_at=now)
    with engine.begin() as connection:
        bulk_insert(connection, AccountProfile.__table__, [
            {"account_id": p.account_id, "timezone": p.timezone,
             "business_hours": p.business_hours, "updated_at": p.updated_at}
            for p in profiles.values()])
    return profiles


class _Recorder:
    """Stands in for the session in the service's own functions: keeps the events they add;
    reads nothing."""

    def __init__(self):
        self.events: list[ItemEvent] = []

    def add(self, row) -> None:
        if isinstance(row, ItemEvent):
            self.events.append(row)

    def exec(self, *_args, **_kwargs):
        raise AssertionError("the generator's steps read nothing from the database")


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    if end <= start:
        return start
    return start + (end - start) * rng.random()


def _elapsed_share(rng: random.Random) -> float:
    pick = rng.random()
    for share, low, high in ELAPSED_MIX:
        if pick < share:
            return rng.uniform(low, high)
        pick -= share
    return rng.uniform(ELAPSED_MIX[-1][1], ELAPSED_MIX[-1][2])


def _created_at(world: _World, rng: random.Random, status: str, priority: int,
                profile: AccountProfile | None) -> datetime:
    """Closed items over the past year; open ones at a share of their running target (the
    first response until answered, else the resolution), so their SLA states come out
    mostly ok, some at risk, some breached."""
    now = world.now
    if status == "closed":
        return now - timedelta(hours=rng.uniform(3 * 24, 365 * 24))
    if status == "resolved":
        return now - timedelta(hours=rng.uniform(24, 20 * 24))
    if rng.random() < STALE_SHARE:
        return now - timedelta(hours=rng.uniform(24, 60 * 24))
    policy = world.desk.policies[priority]
    if status in ("new", "triaged"):  # not answered yet
        minutes = policy.first_response_minutes * _elapsed_share(rng)
    elif status == "waiting_on_customer":
        minutes = policy.resolution_minutes * rng.uniform(*WAITING_ELAPSED)
    else:
        minutes = policy.resolution_minutes * _elapsed_share(rng)
    if not policy.business_hours:
        return now - timedelta(minutes=minutes)
    table = _business_table(world, profile)
    slot = min(bisect(table, minutes), len(table) - 1)
    return now - slot * SLOT + SLOT * rng.random()


def _business_table(world: _World, profile: AccountProfile | None) -> list[float]:
    """Business minutes between now - k slots and now, for each k (cached per clock)."""
    key = (profile.business_hours, profile.timezone) if profile else None
    if key not in world.tables:
        clock = sla_clock._clock(world.desk, True, profile)
        table, total, end = [0.0], 0.0, world.now
        for _ in range(int(HORIZON / SLOT)):
            total += clock.minutes_between(end - SLOT, end)
            end -= SLOT
            table.append(total)
        world.tables[key] = table
    return world.tables[key]


@dataclass(frozen=True)
class _World:
    desk: escalations.SupportDesk
    now: datetime
    staff: list[str]  # support staff IDs: owners and workers
    contacts: dict[str, list[str]]  # account ID -> contact IDs
    hosts: dict[str, list[str]]  # account ID -> site hostnames
    home: dict[str, str]  # account ID -> the region that usually serves it
    profiles: dict[str, AccountProfile]
    tables: dict = field(default_factory=dict)  # business-time tables, per clock


def _items(engine, world: _World, made: Generated, count: int, rng: random.Random,
           progress: Progress) -> None:
    accounts = made.account_ids[:]
    rng.shuffle(accounts)  # the skew falls on accounts in no particular order
    cumulative = list(accumulate((rank + 20) ** -0.7 for rank in range(len(accounts))))
    owners = world.staff
    owner_weights = list(accumulate(1.0 / (rank + 1.5) for rank in range(len(owners))))
    progress.start("work items", count)
    for start in range(0, count, BATCH):
        item_rows, event_rows = [], []
        for _ in range(min(BATCH, count - start)):
            account_id = accounts[bisect(cumulative, rng.random() * cumulative[-1])]
            owner = owners[bisect(owner_weights, rng.random() * owner_weights[-1])]
            item, events = _item(world, rng, account_id, owner)
            item_rows.append({column.key: getattr(item, column.key)
                              for column in WorkItem.__table__.columns})
            event_rows += [{"item_id": event.item_id, "at": event.at, "actor": event.actor,
                            "kind": event.kind, "detail": event.detail,
                            "body_encrypted": event.body_encrypted} for event in events]
            _count(made, item)
        with engine.begin() as connection:
            bulk_insert(connection, WorkItem.__table__, item_rows)
            bulk_insert(connection, ItemEvent.__table__, event_rows)
        made.items += len(item_rows)
        made.events += len(event_rows)
        progress.advance(len(item_rows))
    progress.finish()


def _count(made: Generated, item: WorkItem) -> None:
    made.by_status[item.status] = made.by_status.get(item.status, 0) + 1
    if item.account_id:
        made.items_per_account[item.account_id] = made.items_per_account.get(
            item.account_id, 0) + 1
    if item.is_open:
        made.open_by_sla[item.sla_state] = made.open_by_sla.get(item.sla_state, 0) + 1
        made.open_by_region[item.region] = made.open_by_region.get(item.region, 0) + 1
        if item.owner_id:
            made.open_by_owner[item.owner_id] = made.open_by_owner.get(item.owner_id, 0) + 1


def _item(world: _World, rng: random.Random, account_id: str,
          owner: str) -> tuple[WorkItem, list[ItemEvent]]:
    desk, now = world.desk, world.now
    kind = KIND(rng)
    if kind == "task" and rng.random() < 0.2:
        account_id = None  # internal work under no account
    channel = CHANNEL[kind](rng)
    priority = PRIORITY[kind](rng)
    status = STATUS(rng)
    created = _created_at(world, rng, status, priority, world.profiles.get(account_id))
    host = rng.choice(world.hosts.get(account_id) or ["our platform"])
    # Who works on the item while nobody owns it (and who logged it, unless the form did).
    worker = Actor("staff", rng.choice(world.staff))
    from_form = channel == "web_form"
    request_id = reference = verification = requester = None
    if from_form:
        request_id, reference, verification = new_id("req"), new_reference(), VERIFICATION(rng)
        severity = rng.choice(("critical", "high", "normal", "normal", "low"))
        title = f"Web request {reference}: {SEVERITY_TITLES[severity]}"
    else:
        title = rng.choice(TITLES[kind]).format(host=host)
        if account_id and kind != "task" and rng.random() < 0.5:
            requester, verification = rng.choice(world.contacts[account_id]), "authorized"
    body = rng.choice(BODIES).format(t=created, host=host) if not from_form and \
        rng.random() < 0.6 else None
    item = WorkItem(
        id=new_id("itm"), account_id=account_id, kind=kind, channel=channel,
        title_encrypted=desk.seal(title[:500], ITEM_TITLE),
        body_encrypted=desk.seal(body, ITEM_BODY) if body else None, priority=priority,
        region=world.home[account_id] if account_id and not from_form
        and rng.random() < HOME_REGION_SHARE else desk.rota.on_shift(created).name,
        request_id=request_id,
        request_changed_at=created if from_form else None, requester_contact_id=requester,
        requester_verification=verification, created_at=created,
        created_by="system" if from_form else worker.id, updated_at=created,
        last_worked_at=None if from_form else created,
        first_response_due=created, first_response_risk_at=created, resolution_due=created,
        resolution_risk_at=created, next_due=created, next_risk_at=created)
    sla_clock.set_targets(desk, item, world.profiles.get(account_id), created)
    recorder = _Recorder()
    if from_form:
        record_event(recorder, desk, item, Actor.system("intake"), "created", created,
                     f"ticket from the public form ({reference}), P{priority}, "
                     f"requester {verification}, region {item.region}")
    else:
        record_event(recorder, desk, item, worker, "created", created,
                     f"{kind} by {channel}, P{priority}, region {item.region}")
    for moment, step, argument in _plan(desk, rng, item, status, now, owner):
        actor = Actor("staff", item.owner_id) if item.owner_id else worker
        step(recorder, desk, item, actor, moment, argument)
    if item.is_open:
        _watch_sla(recorder, desk, item, now)
    return item, recorder.events


def _next_shift_change(desk, moment: datetime) -> datetime:
    region = desk.rota.on_shift(moment)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(minutes=region.ends)


def _plan(desk, rng: random.Random, item: WorkItem, status: str, now: datetime, owner: str):
    """What happens to the item, in time order: (when, step, argument)."""
    created = item.created_at
    latest = now - timedelta(seconds=30)
    steps = []
    owned = rng.random() < (0.9 if status in ("resolved", "closed") else 0.65)
    late = rng.random() < LATE_FIRST_RESPONSE
    first = min(created + (item.first_response_due - created)
                * (rng.uniform(1.0, 1.5) if late else rng.uniform(0.05, 0.95)),
                _between(rng, created, latest))
    if owned:
        steps.append((created + (first - created) * rng.random(), _assign, owner))
    paths = {"new": [], "triaged": ["triaged"],
             "in_progress": rng.choice((["in_progress"], ["triaged", "in_progress"])),
             "waiting_on_customer": ["in_progress", "waiting_on_customer"],
             "resolved": ["in_progress", "resolved"],
             "closed": ["in_progress", "resolved", "closed"]}[status]
    moment = first
    for index, target in enumerate(paths):
        if target == "resolved":
            due = created + (item.resolution_due - created) * rng.uniform(0.2, 1.3)
            moment = min(max(due, moment + timedelta(minutes=5)), latest)
        elif target == "closed":
            moment = min(moment + timedelta(hours=rng.uniform(1, 7 * 24)), latest)
        elif target == "in_progress" and index > 0:  # triaged first: work starts in time
            moment = min(max(moment, moment + (item.first_response_due - moment)
                             * rng.uniform(0.1, 0.9)), latest)
        elif index > 0:
            moment = _between(rng, moment, min(latest, moment + timedelta(days=3)))
        steps.append((moment, _move, target))
    last = moment if paths else latest
    if (item.request_id or item.requester_contact_id) and rng.random() < 0.4:
        steps.append((min(first + timedelta(minutes=rng.uniform(1, 30)), latest), _reply,
                      rng.choice(REPLIES)))
    if rng.random() < 0.25:
        steps.append((_between(rng, created, last), _comment, rng.choice(COMMENTS)))
    change = _next_shift_change(desk, created)
    if status in ("new", "triaged", "in_progress") and change < latest and rng.random() < 0.3:
        steps.append((change, _hand_off, None))
    steps.sort(key=lambda step: step[0])
    return steps


# Each step does to the item what the service function of the same name does, without its
# reads (the generator knows the item) and without the emails (the outbox is not measured).


def _assign(session, desk, item: WorkItem, actor: Actor, moment: datetime,
            owner: str) -> None:
    item.owner_id = owner
    worked(item, actor, moment)
    record_event(session, desk, item, actor, "owner", moment, f"assigned to {owner}")


def _move(session, desk, item: WorkItem, actor: Actor, moment: datetime, status: str) -> None:
    work_items._move(session, desk, item, actor, status, moment, None)


def _reply(session, desk, item: WorkItem, actor: Actor, moment: datetime, body: str) -> None:
    if item.first_response_at is None:
        item.first_response_at = moment
    worked(item, actor, moment)
    sla_clock.follow_clock(item, moment)
    record_event(session, desk, item, actor, "reply", moment, "sent to the requester",
                 body)


def _comment(session, desk, item: WorkItem, actor: Actor, moment: datetime,
             body: str) -> None:
    worked(item, actor, moment)
    record_event(session, desk, item, actor, "comment", moment, "", body)


def _hand_off(session, desk, item: WorkItem, _actor: Actor, moment: datetime,
              _argument) -> None:
    """The shift change after the item was created handed it on, as `service.hand_off` does
    with the idle open items of the region going off shift."""
    incoming = desk.rota.on_shift(moment)
    outgoing = desk.rota.before(incoming)
    idle_since = moment - desk.handoff_idle
    if item.region != outgoing.name or item.status not in ("new", "triaged", "in_progress") \
            or not (item.owner_id is None or item.last_worked_at is None
                    or item.last_worked_at < idle_since):
        return
    item.region, item.owner_id, item.updated_at = incoming.name, None, moment
    record_event(session, desk, item, Actor.system("shifts"), "handoff", moment,
                 f"{outgoing.name} -> {incoming.name}")


def _watch_sla(session, desk, item: WorkItem, now: datetime) -> None:
    """What `service.check_sla` would have marked by now, with its event."""
    state = escalations.sla_state(item, now)
    if state == item.sla_state:
        return
    target = "first response" if item.first_response_at is None else "resolution"
    crossed = item.next_due if state == "breached" else item.next_risk_at
    item.sla_state = state
    record_event(session, desk, item, Actor.system("sla"), "sla",
                 min(max(crossed, item.created_at), now), f"{target} {state}")
