"""Phone numbers are read in the contact's own country (its `country`, else its locale's
region, else vault.default_phone_region), must be valid numbers there, and are otherwise
rejected with their line or path; never stored as another country's number."""

import json

import pytest
from sqlmodel import select

from contacts.core.db import session_scope
from contacts.vault import fields
from contacts.vault.models import Contact
from tests.vault.fixtures import as_csv

# (typed, locale, country, stored) for numbers written without their +country code.
NATIONAL = [
    ("06 12 34 56 78", "fr-FR", None, "+33612345678"),
    ("06.12.34.56.78", "fr", "FR", "+33612345678"),
    ("030 901820", "de-DE", None, "+4930901820"),
    ("020 7946 0958", "en-GB", None, "+442079460958"),
    ("020 7946 0958", "en", "gb", "+442079460958"),
    ("(201) 555-0123", "en", None, "+12015550123"),  # vault.default_phone_region = US
    ("(11) 98765-4321", "pt_BR", None, "+5511987654321"),
]
# (typed, locale, country, reason) that must be refused.
INVALID = [
    ("06 12 34 56 78", "en", None, "phone is not a valid number of US"),  # the old damage
    ("06 12 34 56 78", "en-US", None, "phone is not a valid number of US"),
    ("06 12 34 56", "fr-FR", None, "phone is not a valid number of FR"),
    ("+1 061 234 5678", "en", None, "phone is not a valid number of its country"),
    ("+33 1 23", "fr-FR", None, "phone is not a valid number of its country"),
    ("12 34 56 78 90", "de", "DE", "phone is not a valid number of DE"),
    ("06 12 34 56 78", "fr-FR", "XX", "country must be an ISO 3166 code such as 'FR'"),
]


def document_of(cases) -> dict:
    contacts = [{"external_id": f"P{n}", "name": f"Person {n}",
                 "email": f"person{n}@phones.example", "phone": typed, "locale": locale,
                 "role": "other", "timezone": "UTC",
                 "sites": [], **({"country": country} if country else {})}
                for n, (typed, locale, country, _) in enumerate(cases)]
    return {"accounts": [{"external_id": "PHONES", "name": "Phones Ltd", "sites": [],
                          "contacts": contacts}]}


def stored_phones(engine, vault) -> dict[str, str | None]:
    with session_scope(engine) as session:
        rows = session.exec(select(Contact)).all()
        return {row.external_id: vault.crypto.cipher.decrypt(row.phone_encrypted,
                                                             context="contact.phone")
                for row in rows}


@pytest.mark.parametrize(("typed", "locale", "country", "stored"), NATIONAL)
def test_a_national_number_is_read_in_the_contacts_country(typed, locale, country, stored):
    region = fields.phone_region(fields.checked_country(country), locale, "US")
    assert fields.e164_phone(typed, region) == stored


def test_the_sync_api_stores_valid_numbers_and_rejects_the_rest_with_their_path(
        client, make_token, engine, vault):
    response = client.post("/api/v1/sync", json=document_of(NATIONAL + INVALID),
                           headers={"Authorization": f"Bearer {make_token('contacts:write')}"})
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["contacts"]["created"] == len(NATIONAL)
    rejected = {item["line"]: item["reason"] for item in report["rejections"]}
    assert len(rejected) == len(INVALID)
    for n, (*_, reason) in enumerate(INVALID):
        assert rejected[f"accounts[0].contacts[{len(NATIONAL) + n}]"].startswith(reason)
    assert stored_phones(engine, vault) == {f"P{n}": case[3] for n, case in enumerate(NATIONAL)}


def test_a_json_import_file_reads_numbers_by_country_and_rejects_the_rest(app, engine, vault,
                                                                        tmp_path):
    (tmp_path / "phones.json").write_text(json.dumps(document_of(NATIONAL + INVALID)))
    result = app.test_cli_runner().invoke(args=["contacts", "import",
                                                str(tmp_path / "phones.json")])
    assert result.exit_code == 0, result.output
    for n, (*_, reason) in enumerate(INVALID):
        assert (f"rejected accounts[0].contacts[{len(NATIONAL) + n}]: contact "
                f"P{len(NATIONAL) + n}: {reason}") in result.output
    assert stored_phones(engine, vault) == {f"P{n}": case[3] for n, case in enumerate(NATIONAL)}


def test_a_csv_import_reads_the_optional_country_column_and_rejects_by_line(app, engine, vault,
                                                                          tmp_path):
    document = document_of(NATIONAL + INVALID)
    lines = as_csv(document).splitlines()
    countries = [case[2] or "" for case in NATIONAL + INVALID]
    rows = [lines[0] + ",country"] + [f"{line},{country}"
                                      for line, country in zip(lines[1:], countries, strict=True)]
    (tmp_path / "phones.csv").write_text("\n".join(rows) + "\n")
    result = app.test_cli_runner().invoke(args=["contacts", "import",
                                                str(tmp_path / "phones.csv")])
    assert result.exit_code == 0, result.output
    for n, (*_, reason) in enumerate(INVALID):
        line = len(NATIONAL) + n + 2  # the header is line 1
        assert f"rejected line {line}: contact P{len(NATIONAL) + n}: {reason}" in result.output
    assert stored_phones(engine, vault) == {f"P{n}": case[3] for n, case in enumerate(NATIONAL)}


def test_a_csv_without_the_country_column_still_reads_the_locale(app, engine, vault, tmp_path):
    (tmp_path / "plain.csv").write_text(as_csv(document_of(NATIONAL[:3])))
    result = app.test_cli_runner().invoke(args=["contacts", "import",
                                                str(tmp_path / "plain.csv")])
    assert result.exit_code == 0, result.output
    # The second case gives FR only by its country column; its locale "fr" has no region.
    assert stored_phones(engine, vault) == {"P0": "+33612345678", "P2": "+4930901820"}
    assert "rejected line 3: contact P1: phone is not a valid number of US" in result.output
