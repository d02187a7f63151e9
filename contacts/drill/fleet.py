"""The customers a drill plays: accounts, their sites and admin contacts (some stale), as the
product would sync them, and the crowd that reaches the public form once the sites are gone.

Everything is drawn from one seeded random generator, so a drill can be replayed exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST_NAMES = ("Alice", "Bruno", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Inès",
               "Jules", "Karim", "Léa", "Marc", "Nora", "Oscar", "Paula", "Quentin", "Rosa",
               "Samir", "Thea", "Ugo", "Vera", "Walid", "Xavier", "Yasmine", "Zoé")
LAST_NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
              "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "Fournier",
              "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent")
TRADES = ("Gardens", "Bakery", "Motors", "Studio", "Clinic", "Outfitters", "Books", "Legal",
          "Dental", "Logistics", "Roofing", "Optics", "Travel", "Florist", "Brewing")
# Each organisation has a registrable domain of its own (the intake counts its per-domain limit
# by registrable domain): "<org>.example", never subdomains of one shared drill domain.
WEBMAIL = "mailbox-drill.example"  # where people write from when their work address is gone
CONTACTS_PER_ACCOUNT = (1, 2, 3, 4, 5)
CONTACT_WEIGHTS = (10, 25, 30, 20, 15)  # 3.05 contacts per account on average
ROLES = ("site_admin", "technical", "billing")


@dataclass
class Contact:
    external_id: str
    name: str
    email: str
    phone: str
    role: str
    locale: str
    stale: bool  # the mailbox is gone: mail to it is refused


@dataclass
class Site:
    external_id: str
    url: str
    name: str


@dataclass
class Account:
    external_id: str
    name: str
    domain: str
    sites: list[Site] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    id: str | None = None  # Lifeline's acc_ ID, learnt after the sync

    def sync_entry(self) -> dict:
        return {"external_id": self.external_id, "name": self.name,
                "sites": [{"external_id": site.external_id, "url": site.url, "name": site.name}
                          for site in self.sites],
                "contacts": [{"external_id": contact.external_id, "name": contact.name,
                              "email": contact.email, "phone": contact.phone,
                              "role": contact.role, "locale": contact.locale,
                              "timezone": "Europe/Paris" if contact.locale == "fr" else "UTC",
                              "sites": [site.external_id for site in self.sites]}
                             for contact in self.contacts]}


@dataclass
class Fleet:
    accounts: list[Account]

    @property
    def sites(self) -> list[Site]:
        return [site for account in self.accounts for site in account.sites]

    @property
    def contacts(self) -> list[Contact]:
        return [contact for account in self.accounts for contact in account.contacts]

    def dead_addresses(self) -> set[str]:
        return {contact.email for contact in self.contacts if contact.stale}

    def personal_values(self) -> list[str]:
        """Every name, email and phone the vault holds, and the accounts' email domains
        (which a rate limiter keyed in clear would keep), for the plaintext scan."""
        values = [account.domain for account in self.accounts]
        for contact in self.contacts:
            values += [contact.name, contact.email, contact.phone]
        return values


def build_fleet(*, accounts: int, sites: int, stale_share: float, rng: random.Random) -> Fleet:
    """`accounts` accounts sharing `sites` sites (each account at least one), about three
    contacts each, `stale_share` of them stale."""
    if accounts < 1 or sites < accounts:
        raise ValueError("a drill needs at least one account and one site per account")
    fleet = Fleet(accounts=[])
    site_counts = [1] * accounts
    for _ in range(sites - accounts):
        site_counts[rng.randrange(accounts)] += 1
    phone_serial = 0
    for index in range(accounts):
        number = index + 1
        trade = TRADES[index % len(TRADES)]
        owner = LAST_NAMES[(index // len(TRADES)) % len(LAST_NAMES)]
        name = f"{owner} {trade} {number}"
        domain = f"{owner.lower()}-{trade.lower()}-{number}.example"
        account = Account(external_id=f"drill-acct-{number:05d}", name=name, domain=domain)
        for site_number in range(1, site_counts[index] + 1):
            account.sites.append(Site(
                external_id=f"drill-site-{number:05d}-{site_number}",
                url=f"https://{owner.lower()}-{trade.lower()}-{number}-{site_number}"
                    ".cloud.drill.example",
                name=f"{name} site {site_number}"))
        count = rng.choices(CONTACTS_PER_ACCOUNT, CONTACT_WEIGHTS)[0]
        for contact_number in range(1, count + 1):
            phone_serial += 1
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            account.contacts.append(Contact(
                external_id=f"drill-ctc-{number:05d}-{contact_number}",
                name=f"{first} {last}",
                email=f"{first.lower()}.{last.lower()}{contact_number}@{domain}"
                      .replace("é", "e").replace("è", "e").replace("ï", "i"),
                phone=f"+336{12_000_000 + phone_serial:08d}",
                role="site_admin" if contact_number == 1 else rng.choice(ROLES),
                locale="fr" if rng.random() < 0.3 else "en",
                stale=rng.random() < stale_share))
        fleet.accounts.append(account)
    return fleet


@dataclass(frozen=True)
class Visitor:
    """One person at the public form. `expected_account` is the account Lifeline should
    propose (None for people who are no customer's contact); `verifies` says whether they
    enter the emailed code."""

    kind: str  # "admin", "stale", "unknown" or "abusive"
    body: dict
    client_ip: str
    expected_account: Account | None
    verifies: bool


def build_crowd(fleet: Fleet, *, size: int, rng: random.Random) -> list[Visitor]:
    """Listed admins writing from their address, stale contacts writing from a personal one
    (with the phone on file), unknown people, and abusive traffic, shuffled."""
    live = [(account, contact) for account in fleet.accounts for contact in account.contacts
            if not contact.stale]
    stale = [(account, contact) for account in fleet.accounts for contact in account.contacts
             if contact.stale]
    rng.shuffle(live)
    rng.shuffle(stale)
    admins = live[:max(1, size * 55 // 100)]
    stale_writers = stale[:size * 15 // 100]
    unknown = max(1, size * 15 // 100)
    visitors: list[Visitor] = []
    serial = 0

    def next_ip() -> str:
        nonlocal serial
        serial += 1
        return f"10.{serial // 65536 % 256}.{serial // 256 % 256}.{serial % 256}"

    for account, contact in admins:
        visitors.append(Visitor("admin", {
            "email": contact.email, "name": contact.name, "company": account.name,
            "message": f"All our sites are gone ({account.sites[0].name}). Please help.",
            "severity": rng.choice(("critical", "high"))}, next_ip(), account, True))
    for account, contact in stale_writers:
        local = contact.email.split("@")[0]
        visitors.append(Visitor("stale", {
            "email": f"{local}.{rng.randrange(10**6)}@{WEBMAIL}", "name": contact.name,
            "phone": contact.phone, "company": account.name,
            "message": "My work address no longer works; our site disappeared this morning.",
            "severity": "high"}, next_ip(), account, True))
    for number in range(unknown):
        visitors.append(Visitor("unknown", {
            "email": f"visitor{number}.{rng.randrange(10**6)}@{WEBMAIL}",
            "message": "Is the service down? I cannot reach my shop.",
            "severity": "normal"}, next_ip(), None, number % 2 == 0))
    visitors += _abusive(size - len(visitors), next_ip)
    rng.shuffle(visitors)
    return visitors


def _abusive(count: int, next_ip) -> list[Visitor]:
    """A flood from one address, a bot filling the honeypot, oversized bodies."""
    flood_ip = next_ip()
    visitors = []
    for number in range(max(0, count)):
        if number % 5 == 3:
            body = {"email": f"bot{number}@spam-drill.example", "message": "buy now",
                    "website": "http://spam-drill.example"}  # the honeypot field
            visitors.append(Visitor("abusive", body, next_ip(), None, False))
        elif number % 5 == 4:
            body = {"email": f"big{number}@spam-drill.example", "message": "x" * 70_000}
            visitors.append(Visitor("abusive", body, next_ip(), None, False))
        else:
            body = {"email": f"flood{number}@spam-drill.example", "message": "flood"}
            visitors.append(Visitor("abusive", body, flood_ip, None, False))
    return visitors
