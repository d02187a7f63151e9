"""The incident's Atom feed (RFC 4287), built as XML elements rather than as text: every
title and update text is escaped by the serializer, and characters XML 1.0 cannot carry
(control characters, U+FFFE, U+FFFF, lone surrogates) are dropped first, so any update
yields a well-formed, valid feed with exactly one entry per update."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # noqa: S405 - builds XML; parses nothing

from contacts.core import clock
from contacts.incidents.models import Incident, IncidentUpdate

ATOM = "http://www.w3.org/2005/Atom"
# Everything outside XML 1.0's Char production.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _add(parent: ET.Element, tag: str, text: str | None = None, **attributes) -> ET.Element:
    element = ET.SubElement(parent, tag, {name: xml_text(value)
                                          for name, value in attributes.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def _entry_text(update: IncidentUpdate) -> str:
    next_update = clock.format_utc(update.next_update_at) if update.next_update_at else "none"
    return (f"What happened: {update.what_happened}\n"
            f"Who is affected: {update.scope}\n"
            f"Timeline ({update.confidence['timeline']} confidence): {update.timeline}\n"
            f"Sites restored ({update.confidence['restore']} confidence): "
            f"{update.restore_percentage:g}%\n"
            f"Expected data loss ({update.confidence['data_loss']} confidence): "
            f"{update.data_loss}\n"
            f"Next update: {next_update}\n"
            f"Support: {update.support}")


def incident_feed(*, base_url: str, incident: Incident,
                  updates: list[IncidentUpdate]) -> bytes:
    """The feed of one incident's updates, newest first, as UTF-8 bytes."""
    page = f"{base_url}/status/{incident.id}"
    feed = ET.Element("feed", xmlns=ATOM)
    _add(feed, "id", page)
    _add(feed, "title", incident.title, type="text")
    _add(feed, "updated", clock.rfc3339(incident.last_update_at or incident.created_at))
    _add(feed, "link", rel="alternate", type="text/html", href=page)
    _add(feed, "link", rel="self", type="application/atom+xml", href=f"{page}/feed.atom")
    _add(_add(feed, "author"), "name", "Lifeline")
    for update in updates:
        entry = _add(feed, "entry")
        _add(entry, "id", f"{page}#update-{update.number}")
        _add(entry, "title", f"Update {update.number}: {update.restore_percentage:g}% of "
                             f"sites restored ({update.state.replace('_', ' ')})", type="text")
        _add(entry, "updated", clock.rfc3339(update.published_at))
        _add(entry, "link", rel="alternate", type="text/html", href=page)
        _add(entry, "content", _entry_text(update), type="text")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
