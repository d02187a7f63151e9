"""Deterministic vault fixtures: accounts with sites and contacts whose every name, email and
phone is distinctive, so a byte scan can look for each of them."""

from __future__ import annotations

import csv
import io
import random

FIRST = ["Amelie", "Bastien", "Chloe", "Damien", "Elodie", "Fabrice", "Gaelle", "Hugo",
         "Ines", "Julien", "Katell", "Loic", "Maelys", "Nathan", "Oceane", "Paul"]
LAST = ["Arnaud", "Bertin", "Carre", "Dufour", "Etienne", "Fournier", "Gauthier", "Huet"]
ROLES = ["site_admin", "site_admin", "billing", "technical", "other"]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]


def make_document(accounts: int, contacts_per_account: int, seed: int = 7) -> dict:
    chooser = random.Random(seed)
    document: dict = {"accounts": []}
    serial = 0
    for a in range(accounts):
        sites = [{"external_id": f"S{a:05d}-{s}", "url": f"https://acme{a:05d}-{s}.example.net",
                  "name": f"Acme {a} site {s}"} for s in range(1 + a % 2)]
        contacts = []
        for _ in range(contacts_per_account):
            serial += 1
            first, last = chooser.choice(FIRST), chooser.choice(LAST)
            contacts.append({
                "external_id": f"C{serial:07d}",
                "name": f"{first} {last}{serial:06d}",
                "email": f"{first.lower()}.{last.lower()}{serial:06d}@acme{a:05d}.example.net",
                "phone": f"+33 6 {serial // 10000 % 100:02d} {serial // 100 % 100:02d} "
                         f"{serial % 100:02d} {a % 100:02d}",
                "role": chooser.choice(ROLES),
                "locale": chooser.choice(["en", "fr-FR", "de"]),
                "timezone": chooser.choice(ZONES),
                "sites": [sites[0]["external_id"]],
            })
        document["accounts"].append({"external_id": f"A{a:05d}", "name": f"Acme {a} Ltd",
                                     "sites": sites, "contacts": contacts})
    return document


def as_csv(document: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["account_external_id", "account_name", "contact_external_id", "name",
                     "email", "phone", "role", "locale", "timezone", "site_external_ids",
                     "site_urls"])
    for account in document["accounts"]:
        urls = {site["external_id"]: site["url"] for site in account["sites"]}
        for contact in account["contacts"]:
            writer.writerow([account["external_id"], account["name"], contact["external_id"],
                             contact["name"], contact["email"], contact["phone"],
                             contact["role"], contact["locale"], contact["timezone"],
                             ";".join(contact["sites"]),
                             ";".join(urls[site] for site in contact["sites"])])
    return out.getvalue()


def personal_values(document: dict) -> list[str]:
    """Every name, email and phone (as typed and in E.164) in the document."""
    values = []
    for account in document["accounts"]:
        for contact in account["contacts"]:
            values += [contact["name"], contact["email"], contact["phone"],
                       "+" + "".join(ch for ch in contact["phone"] if ch.isdigit())]
    return values
