"""Reading contact files (CSV or JSON) into sync entries, each part with its line or path.

A malformed entry becomes a rejection with its line and reason; the others go on to
`sync.sync`. The JSON document is the sync API's body; the CSV has one row per contact.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from contacts.core.errors import Invalid
from contacts.core.inputs import parse_json
from contacts.vault.schemas import AccountIn, ContactIn, ImportReport, SiteIn
from contacts.vault.sync import AccountEntry

CSV_COLUMNS = ("account_external_id", "account_name", "contact_external_id", "name", "email",
               "phone", "role", "locale", "timezone", "site_external_ids", "site_urls")
# Optional columns: `country` (ISO 3166, FR), where a phone without +country code is from.
OPTIONAL_CSV_COLUMNS = ("country",)


@dataclass
class ParsedFile:
    entries: list[AccountEntry]
    report: ImportReport = field(default_factory=ImportReport)

    @property
    def contact_count(self) -> int:
        return sum(len(entry.account.contacts) for entry in self.entries)


def _reason(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_file(path: Path, file_format: str | None = None) -> ParsedFile:
    file_format = file_format or path.suffix.lstrip(".").lower()
    if file_format not in ("csv", "json"):
        raise Invalid(f"cannot tell the format of {path.name}: use a .csv or .json file, "
                      "or --format")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid(f"{path.name} is not UTF-8 text") from None
    return parse_text(text, file_format, name=path.name)


def parse_text(text: str, file_format: str, name: str = "the file") -> ParsedFile:
    if file_format == "csv":
        return parse_csv(text)
    if file_format == "json":
        return parse_document(parse_json(text, name=name))
    raise Invalid(f"unknown format {file_format!r}: use csv or json")


def parse_document(document: object) -> ParsedFile:
    parsed = ParsedFile(entries=[])
    if not isinstance(document, dict) or not isinstance(document.get("accounts"), list):
        raise Invalid('the document must be {"accounts": [...]}')
    for index, raw in enumerate(document["accounts"]):
        prefix = f"accounts[{index}]"
        if not isinstance(raw, dict):
            parsed.report.reject("account", prefix, None, "an account must be an object")
            continue
        shell = {key: raw.get(key) for key in ("external_id", "name")}
        try:
            account = AccountIn.model_validate(shell)
        except ValidationError as exc:
            parsed.report.reject("account", prefix, _text(raw.get("external_id")), _reason(exc))
            continue
        entry = AccountEntry(account, prefix)
        unknown = set(raw) - {"external_id", "name", "sites", "contacts"}
        if unknown:
            parsed.report.reject("account", prefix, account.external_id,
                                 f"unknown field {sorted(unknown)[0]!r}")
            continue
        for kind, model, items, lines in (("site", SiteIn, account.sites, entry.site_lines),
                                          ("contact", ContactIn, account.contacts,
                                           entry.contact_lines)):
            raw_items = raw.get(kind + "s") or []
            if not isinstance(raw_items, list):
                parsed.report.reject("account", prefix, account.external_id,
                                     f"{kind}s must be a list")
                raw_items = []
            for position, item in enumerate(raw_items):
                line = f"{prefix}.{kind}s[{position}]"
                try:
                    items.append(model.model_validate(item))
                except ValidationError as exc:
                    external_id = item.get("external_id") if isinstance(item, dict) else None
                    parsed.report.reject(kind, line, _text(external_id), _reason(exc))
                    continue
                lines.append(line)
        parsed.entries.append(entry)
    return parsed


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _csv_rows(reader: csv.DictReader):
    """The rows; a line the csv module cannot read (a field over its 131,072 characters)
    refuses the whole file with its line: what follows it cannot be read reliably."""
    try:
        yield from reader
    except csv.Error as exc:
        raise Invalid(f"line {reader.reader.line_num}: the CSV cannot be read ({exc})") from None


def parse_csv(text: str) -> ParsedFile:
    parsed = ParsedFile(entries=[])
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames or []
    except csv.Error as exc:
        raise Invalid(f"line {reader.reader.line_num}: the CSV header cannot be read "
                      f"({exc})") from None
    missing = [column for column in CSV_COLUMNS if column not in fieldnames]
    if missing:
        raise Invalid(f"the CSV header lacks the column{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(missing)}")
    by_account: dict[str, AccountEntry] = {}
    known_sites: dict[str, set[str]] = {}
    for row in _csv_rows(reader):
        line = f"line {reader.line_num}"
        external_id = (row.get("contact_external_id") or "").strip() or None
        try:
            account_in = AccountIn(external_id=(row["account_external_id"] or "").strip(),
                                   name=(row["account_name"] or "").strip())
            site_ids = _split(row["site_external_ids"])
            site_urls = _split(row["site_urls"])
            if site_urls and len(site_urls) != len(site_ids):
                raise Invalid("site_external_ids and site_urls must list as many items")
            contact = ContactIn(
                external_id=external_id or "", name=(row["name"] or "").strip(),
                email=(row["email"] or "").strip(), phone=(row["phone"] or "").strip() or None,
                role=(row["role"] or "").strip() or "other",
                locale=(row["locale"] or "").strip() or "en",
                timezone=(row["timezone"] or "").strip() or "UTC", sites=site_ids,
                country=(row.get("country") or "").strip() or None)
        except ValidationError as exc:
            parsed.report.reject("contact", line, external_id, _reason(exc))
            continue
        except Invalid as exc:
            parsed.report.reject("contact", line, external_id, exc.message)
            continue
        entry = by_account.get(account_in.external_id)
        if entry is None:
            entry = AccountEntry(account_in, line)
            by_account[account_in.external_id] = entry
            known_sites[account_in.external_id] = set()
            parsed.entries.append(entry)
        seen = known_sites[account_in.external_id]
        for position, site_id in enumerate(site_ids):
            if site_id not in seen:
                seen.add(site_id)
                url = site_urls[position] if site_urls else None
                entry.account.sites.append(SiteIn(external_id=site_id, url=url))
                entry.site_lines.append(line)
        entry.account.contacts.append(contact)
        entry.contact_lines.append(line)
    return parsed


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(";") if part.strip()]
