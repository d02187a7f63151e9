"""Safe reads of a parsed `email.message.EmailMessage`: raw header values, decoded headers,
part payloads and a bounded walk of the MIME tree. Nothing here raises on hostile input."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from email import policy
from email.message import Message

MAX_PARTS = 250  # MIME parts looked at in one message
MAX_DEPTH = 8  # multipart and message/rfc822 levels looked into
MAX_HEADER_CHARS = 16_384  # of one header value, before it is decoded
MAX_HEADERS = 1_000  # header fields read from the top of one part

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_WHITESPACE = re.compile(r"\s+")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,500}>")


def raw_headers(part: Message, name: str) -> list[str]:
    """Every value of the header `name`, as received (folded, encoded words undecoded)."""
    name = name.lower()
    try:
        items = part.raw_items()
        found = []
        for index, (key, value) in enumerate(items):
            if index >= MAX_HEADERS:
                break
            if str(key).lower() == name:
                found.append(_unescaped(str(value)[:MAX_HEADER_CHARS]))
        return found
    except Exception:  # a broken header block reads as no header
        return []


def _unescaped(value: str) -> str:
    """Raw 8-bit bytes in a header (read as surrogate escapes) as the UTF-8 they mostly are."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except Exception:
        return value


def raw_header(part: Message, name: str) -> str | None:
    values = raw_headers(part, name)
    return values[0] if values else None


def header_names(part: Message) -> list[str]:
    try:
        return [str(key).lower() for key, _ in list(part.raw_items())[:MAX_HEADERS]]
    except Exception:
        return []


def one_line(value: str, limit: int = 998) -> str:
    """A header value as one line of text: no control characters, no CR/LF (a value cannot
    smuggle a second header through), whitespace collapsed."""
    value = _CONTROL.sub(" ", value.replace("\r", " ").replace("\n", " "))
    return _WHITESPACE.sub(" ", value).strip()[:limit]


def decoded(name: str, raw: str | None) -> object | None:
    """The header object `email.policy.default` makes of `raw` (RFC 2047 decoded, addresses
    parsed), or None when even that fails."""
    if raw is None:
        return None
    try:
        return policy.default.header_factory(name, raw[:MAX_HEADER_CHARS])
    except Exception:  # the standard parser has had crashes on odd values
        return None


def decoded_text(name: str, raw: str | None, limit: int = 998) -> str:
    header = decoded(name, raw)
    if header is None:
        return one_line(raw or "", limit)
    try:
        return one_line(str(header), limit)
    except Exception:
        return one_line(raw or "", limit)


def message_ids(value: str | None, limit: int = 100) -> tuple[str, ...]:
    """The `<id>`s in a header, the last `limit` of them (the newest, in References)."""
    if not value:
        return ()
    found = _MESSAGE_ID.findall(value.replace("\r", "").replace("\n", ""))
    return tuple(found[-limit:])


def first_message_id(value: str | None) -> str | None:
    if not value:
        return None
    found = message_ids(value, limit=1_000)
    if found:
        return found[0]
    bare = one_line(value, 500)
    if bare and " " not in bare and "@" in bare and "<" not in bare and ">" not in bare:
        return f"<{bare}>"
    return None


def content_type(part: Message) -> str:
    try:
        kind = part.get_content_type()
    except Exception:
        return "text/plain"
    return kind if re.fullmatch(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}", kind) \
        else "application/octet-stream"


def param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    return one_line(str(value), 200).lower() if value is not None else None


def is_attachment(part: Message) -> bool:
    try:
        disposition = (part.get_content_disposition() or "").lower()
    except Exception:
        disposition = ""
    return disposition == "attachment" or filename(part) is not None


def filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    if not name:
        return None
    name = one_line(str(name), 255).replace("/", "_").replace("\\", "_").lstrip(".")
    return name or None


def payload_bytes(part: Message) -> bytes:
    """The part's body with its transfer encoding undone (best effort on broken base64)."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def charset_of(part: Message) -> str:
    try:
        charset = part.get_content_charset() or "us-ascii"
        name = codecs.lookup(charset).name
    except Exception:  # unknown or malformed charset: read as UTF-8
        return "utf-8"
    # Only text codecs: "hex", "rot13", "base64" are codecs too, and not charsets.
    try:
        "".encode(name)
        b"".decode(name)
    except Exception:
        return "utf-8"
    return name


def text_of(part: Message, limit: int) -> str:
    data = payload_bytes(part)[: limit * 4]
    try:
        text = data.decode(charset_of(part), errors="replace")
    except Exception:
        text = data.decode("utf-8", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")[:limit]
    if content_type(part) == "text/plain" and param(part, "format") == "flowed":
        return unflowed(text, delete_space=param(part, "delsp") == "yes")
    return text


def unflowed(text: str, *, delete_space: bool = False) -> str:
    """format=flowed text (RFC 3676) as its paragraphs: a line ending in a space goes on in
    the next line of the same quote depth; space-stuffing removed; `-- ` stays a line."""
    lines: list[str] = []
    pieces: list[str] = []  # the paragraph still flowing
    open_depth = None  # its quote depth
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        if open_depth != depth and pieces:
            lines.append("".join(pieces))
            pieces = []
        if not pieces:
            pieces.append(">" * depth + (" " if depth and content else ""))
        flowing = content.endswith(" ") and content != "-- "
        pieces.append(content[:-1] if flowing and delete_space else content)
        open_depth = depth if flowing else None
        if not flowing:
            lines.append("".join(pieces))
            pieces = []
    if pieces:
        lines.append("".join(pieces))
    return "\n".join(lines)


def subparts(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        return [item for item in payload[:MAX_PARTS] if isinstance(item, Message)]
    return []


def walk(message: Message, *, into_messages: bool = False) -> Iterator[tuple[Message, int]]:
    """Each part with its depth, parents first, at most MAX_PARTS and MAX_DEPTH levels;
    attached messages (message/rfc822) are entered only when `into_messages`."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part, depth
        if depth >= MAX_DEPTH:
            continue
        kind = content_type(part)
        if kind.startswith("multipart/") or (into_messages and kind == "message/rfc822"):
            children = subparts(part)
            stack.extend((child, depth + 1) for child in reversed(children))
