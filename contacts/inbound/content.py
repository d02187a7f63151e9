"""HTML bodies of inbound mail: sanitized for display (nh3, an allow-list), and read as text
when a message has no text/plain part."""

from __future__ import annotations

import html as html_entities
import re
from html.parser import HTMLParser

import nh3

MAX_HTML_CHARS = 1_000_000
MAX_NESTING = 200  # open elements at once

# Structure and emphasis only. No img, no style attributes or <style>, no forms, frames or
# media: nothing that loads anything when shown. Links stay, opened only by a click.
_TAGS = {"a", "b", "strong", "i", "em", "u", "s", "p", "br", "div", "span", "blockquote",
         "pre", "code", "ul", "ol", "li", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
         "hr", "table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "sub", "sup",
         "small", "big", "center", "font"}
_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"},
               "th": {"colspan", "rowspan"}}
# Removed with everything inside them (the others are unwrapped, their text kept).
_DROPPED_WITH_CONTENT = {"script", "style", "title", "noscript", "template", "textarea",
                         "select", "option", "iframe", "object", "embed", "svg", "math",
                         "head", "audio", "video"}
_SCHEMES = {"http", "https", "mailto"}


def sanitized_html(html: str) -> str:
    """`html` safe to show inside a staff page: allow-listed tags, `href` on links only
    (http, https, mailto; rel="noopener noreferrer"), no image, no remote resource at all.
    HTML nested past MAX_NESTING levels is shown as its text, in paragraphs: the HTML5 tree
    builder under nh3 takes quadratic time on deep nesting."""
    html = html[:MAX_HTML_CHARS]
    if _nesting(html) > MAX_NESTING:
        return _as_paragraphs(text_of_html(html))
    try:
        return nh3.clean(html, tags=_TAGS,
                         clean_content_tags=_DROPPED_WITH_CONTENT, attributes=_ATTRIBUTES,
                         url_schemes=_SCHEMES, link_rel="noopener noreferrer",
                         strip_comments=True, url_relative="deny").strip()
    except Exception:  # nh3 refuses nothing we know of; never show what it did not clean
        return ""


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,20})\b[^<>]{0,2000}?(/?)>")


def _nesting(html: str) -> int:
    """How deep the elements of `html` go, counting every unclosed one (more than a browser
    would: `<p>` closes itself, but never less)."""
    depth = deepest = 0
    for match in _TAG.finditer(html):
        closing, name, self_closing = match.groups()
        if closing:
            depth = max(0, depth - 1)
        elif not self_closing and name.lower() not in _VOID:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _as_paragraphs(text: str) -> str:
    return "\n".join(f"<p>{html_entities.escape(paragraph).replace(chr(10), '<br>')}</p>"
                     for paragraph in text.split("\n\n") if paragraph.strip())


_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
           "pre", "table", "ul", "ol", "hr", "dt", "dd"}
_SKIPPED = {"script", "style", "head", "title", "noscript", "template", "svg", "math"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        elif tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def text_of_html(html: str) -> str:
    """The text a reader sees in `html`: blocks on their own lines, scripts and styles
    left out, entities decoded."""
    extractor = _TextExtractor()
    try:
        extractor.feed(html[:MAX_HTML_CHARS])
        extractor.close()
        text = "".join(extractor.chunks)
    except Exception:  # HTMLParser is lenient; a crash falls back to tags removed
        text = html_entities.unescape(re.sub(r"<[^>]*>", " ", html[:MAX_HTML_CHARS]))
    lines = [re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
