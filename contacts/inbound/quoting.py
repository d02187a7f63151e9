"""What a person wrote in a reply, for display: the text without the quoted history and the
signature (the whole text is kept beside it)."""

from __future__ import annotations

import re

MAX_LINES = 5_000  # lines examined; a longer body is shown whole past them

# "On Mon, 2 Apr 2012 at 18:26, Megan One <m@x> wrote:" (Thunderbird, Gmail, Apple Mail),
# "Le 02/04/2012 à 18:26, Megan One a écrit :" (fr); Gmail may wrap it over two lines.
_ATTRIBUTION = re.compile(
    r"^\s*(?:>\s*)*(?:On\s.{1,300}\swrote|Le\s.{1,300}\sa\s+[ée]crit)\s*[:\uff1a]\s*$",
    re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Le)\s", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"(?:wrote|a\s+[ée]crit)\s*[:\uff1a]\s*$", re.IGNORECASE)
# Outlook and others: a separator line, or a block of header lines of the quoted message.
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:Original Message|Message d'origine|Message original|Forwarded message"
    r"|Message transf[ée]r[ée])\s*-{2,}|_{20,})\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\*?(?:From|De)\s*\*?\s*:\s*\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(?:Sent|Date|To|Cc|Subject|Envoy[ée]|[ÀA]|Objet|Cc)\s*\*?\s*:", re.IGNORECASE)
_QUOTED = re.compile(r"^\s*>")
_SIGNATURE = re.compile(r"^-- ?$")


def shown(text: str) -> str:
    """`text` without quoted lines (`>`), the attribution lines that introduce them, the
    history below an Outlook-style block, and the signature after `-- `; the person's own
    words always survive: when nothing would be left, the text comes back whole."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head, tail = lines[:MAX_LINES], lines[MAX_LINES:]
    kept = _without_history(head) + tail
    kept = _without_signature(kept)
    result = _tidy(kept)
    if result:
        return result
    only_quotes_removed = _tidy([line for line in lines if not _QUOTED.match(line)])
    return only_quotes_removed or text.strip()


def _without_history(lines: list[str]) -> list[str]:
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        span = _attribution_span(lines, index)
        if span:
            following = _next_non_blank(lines, index + span)
            if following is None or _QUOTED.match(lines[following]):
                index += span  # the quoted lines themselves go below
                continue
            break  # unquoted history (Gmail's wrapped forward, Outlook): cut here
        if _SEPARATOR.match(line) and _next_non_blank(lines, index + 1) is not None:
            break
        if _HEADER_FROM.match(line) and _header_block_follows(lines, index + 1):
            break
        if not _QUOTED.match(line):
            kept.append(line)
        index += 1
    return kept


def _attribution_span(lines: list[str], index: int) -> int:
    """How many lines the attribution starting at `index` takes (0: none)."""
    line = lines[index]
    if len(line) > 400:
        return 0
    if _ATTRIBUTION.match(line):
        return 1
    if index + 1 < len(lines) and _ATTRIBUTION_START.match(line) \
            and _ATTRIBUTION_END.search(lines[index + 1]) and len(lines[index + 1]) < 200:
        if _ATTRIBUTION.match(f"{line} {lines[index + 1].strip()}"):
            return 2
    return 0


def _header_block_follows(lines: list[str], start: int) -> bool:
    """At least two header lines (Sent:, To:, Subject:, Envoyé :, À :, Objet :) follow."""
    found = 0
    for line in lines[start:start + 6]:
        if _HEADER_NEXT.match(line):
            found += 1
        elif line.strip() and found == 0:
            return False
    return found >= 2


def _next_non_blank(lines: list[str], start: int) -> int | None:
    for index in range(start, min(len(lines), start + 50)):
        if lines[index].strip():
            return index
    return None


def _without_signature(lines: list[str]) -> list[str]:
    for index, line in enumerate(lines):
        if _SIGNATURE.match(line) and index > 0:
            return lines[:index]
    return lines


def _tidy(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
