"""The Atom feed stays well-formed, valid Atom whatever staff or the API write: markup, `&`,
`]]>`, characters XML 1.0 cannot carry, astral characters. Read by feedparser (as feed readers
do) and by two XML parsers: exactly the updates published, nothing injected."""

from __future__ import annotations

import xml.dom.minidom
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own feed
from datetime import UTC, datetime

import feedparser

from contacts.core.services import services
from contacts.incidents.models import Incident, IncidentUpdate
from tests.vault.fixtures import make_document

ATOM = "{http://www.w3.org/2005/Atom}"
ILLEGAL = "\x01\x08\x0b\x0c\x0e\x1f\ufffe\uffff"
TITLE = f"Sites & apps <deleted> ]]> {ILLEGAL}🔥 𝔘nicode"
INJECTIONS = [
    "</content></entry><entry><id>x</id><title>Injected</title>"
    '<link href="https://evil.example/"/><updated>2020-01-01T00:00:00Z</updated></entry>',
    f"<script>alert(1)</script> & &amp; &#x26; ]]> <![CDATA[ x ]]> {ILLEGAL} 🔥\U0010fffd",
    '<a href="https://evil.example/">click</a>\r\n"quoted" \'single\' \x7f\x85 end',
]


def _call(client, method, url, token, body=None):
    return client.open(url, method=method, json=body,
                       headers={"Authorization": f"Bearer {token}"})


def _xml(text: str) -> str:
    return "".join(c for c in text if c not in ILLEGAL)


def _open_incident_with_updates(client, make_token, sync_document) -> tuple[str, list[str]]:
    sync_document(make_document(accounts=2, contacts_per_account=1))
    token = make_token("incidents:write")
    opened = _call(client, "POST", "/api/v1/incidents", token,
                   {"title": TITLE, "severity": "critical"})
    assert opened.status_code == 201, opened.get_json()
    incident_id = opened.get_json()["id"]
    assert _call(client, "POST", f"/api/v1/incidents/{incident_id}/sites", token,
                 {"sites": ["S00000-0", "S00001-0"]}).status_code == 200
    for text in INJECTIONS:
        published = _call(client, "POST", f"/api/v1/incidents/{incident_id}/updates", token, {
            "state": "identified", "what_happened": text, "timeline": f"Timeline {text}",
            "data_loss": f"Loss {text}", "next_update_at": "2030-01-01T09:34:00+01:00",
            "confidence_timeline": "medium", "confidence_restore": "high",
            "confidence_data_loss": "low"})
        assert published.status_code == 201, published.get_json()
    return incident_id, INJECTIONS


def test_the_feed_is_valid_atom_whatever_the_updates_say(app, client, make_token,
                                                         sync_document):
    incident_id, texts = _open_incident_with_updates(client, make_token, sync_document)
    answer = client.get(f"/status/{incident_id}/feed.atom")
    assert answer.status_code == 200
    assert answer.mimetype == "application/atom+xml"
    body = answer.get_data()

    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == _xml(TITLE)
    page = f"{services(app).settings.app_base_url}/status/{incident_id}"
    assert {link.rel: link.href for link in parsed.feed.links} == {
        "alternate": page, "self": f"{page}/feed.atom"}
    assert parsed.feed.id == page and parsed.feed.updated_parsed is not None
    assert [entry.title for entry in parsed.entries] == [
        f"Update {n}: 0% of sites restored (identified)" for n in (3, 2, 1)]
    for entry, text in zip(parsed.entries, reversed(texts), strict=True):
        assert entry.id.startswith(page + "#update-")
        assert [link.href for link in entry.links] == [page]
        assert entry.updated_parsed is not None
        (content,) = entry.content
        assert content.type == "text/plain"
        # feedparser reads C1 controls as Windows-1252 (\x85 is an ellipsis); XML has \x85.
        expected = _xml(text).replace("\r\n", "\n").replace("\x85", "\u2026")
        assert content.value.startswith(f"What happened: {expected}\n")
        assert "Next update: 2030-01-01 08:34 UTC" in content.value

    root = ET.fromstring(body)  # noqa: S314 - our own feed
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 3
    assert [e.find(f"{ATOM}title").text for e in entries] == [
        entry.title for entry in parsed.entries]
    assert all("Injected" not in (e.find(f"{ATOM}title").text or "") for e in entries)
    for element in root.iter():  # the injected link is text inside content, nowhere else
        if "evil.example" in (element.text or "") + "".join(element.attrib.values()):
            assert element.tag == f"{ATOM}content"
    assert all(link.get("href") == page for e in entries for link in e.findall(f"{ATOM}link"))
    for entry, text in zip(entries, reversed(texts), strict=True):
        content = entry.find(f"{ATOM}content")
        assert content.get("type") == "text"
        assert content.text.startswith(f"What happened: {_xml(text)}\n".replace("\r\n", "\n"))
    document = xml.dom.minidom.parseString(body)  # noqa: S318 - our own feed
    assert len(document.getElementsByTagName("entry")) == 3
    assert document.documentElement.namespaceURI == "http://www.w3.org/2005/Atom"


def test_the_feed_of_an_incident_without_updates_is_valid(client, make_token, sync_document):
    token = make_token("incidents:write")
    opened = _call(client, "POST", "/api/v1/incidents", token,
                   {"title": "A & B <c>", "severity": "minor"})
    incident_id = opened.get_json()["id"]
    parsed = feedparser.parse(client.get(f"/status/{incident_id}/feed.atom").get_data())
    assert parsed.bozo == 0 and parsed.entries == [] and parsed.feed.title == "A & B <c>"


def test_characters_that_cannot_be_stored_are_dropped_from_the_feed_too():
    """Lone surrogates cannot reach the database (neither stores them), but the feed does
    not rely on that."""
    from contacts.incidents import feed

    now = datetime(2026, 12, 2, 9, 34, tzinfo=UTC)
    incident = Incident(id="inc_x", title="Lone \ud800 surrogate \udfff", state="identified",
                        severity="major", started_at=now, created_at=now, updated_at=now,
                        created_by="t")
    update = IncidentUpdate(
        id="upd_x", incident_id="inc_x", number=1, state="identified",
        what_happened="text \udc00 & \x00 nul", scope="s", accounts_affected=1,
        sites_affected=1, timeline="t", restore_percentage=12.5, data_loss="d",
        confidence={"timeline": "low", "restore": "low", "data_loss": "low"},
        support="https://support.example/?a=1&b=2", published_at=now, published_by="t")
    body = feed.incident_feed(base_url="https://status.example", incident=incident,
                              updates=[update])
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0
    assert parsed.feed.title == "Lone  surrogate"  # feedparser trims the end
    assert parsed.entries[0].title == "Update 1: 12.5% of sites restored (identified)"
    assert "What happened: text  &  nul" in parsed.entries[0].content[0].value
    assert "Support: https://support.example/?a=1&b=2" in parsed.entries[0].content[0].value
    assert ET.fromstring(body).find(f"{ATOM}entry") is not None  # noqa: S314
