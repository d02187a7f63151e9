"""HTML bodies as staff see them: an allow-list of tags, links that open nothing by
themselves, and not one remote resource; and the text of an HTML-only body."""

from __future__ import annotations

from contacts.inbound.content import sanitized_html, text_of_html
from tests.inbound.samples import eml, parsed


def test_scripts_styles_and_event_handlers_are_removed_with_their_content():
    html = sanitized_html('<p onclick="steal()">Hi<script>alert(1)</script></p>'
                          "<style>p{color:red}</style><iframe src=x>inside</iframe>")
    assert html == "<p>Hi</p>"


def test_no_image_and_no_remote_resource_survive():
    html = sanitized_html(
        '<img src="https://t.example.net/p.gif" alt="logo"><div style="background:url(//t.example'
        '.net/a)">x</div><table background="http://t.example.net/b"><tr><td>y</td></tr></table>'
        '<link rel=stylesheet href="http://t.example.net/c.css"><video src="v.mp4"></video>'
        '<svg><image href="http://t.example.net/d"/></svg><object data="e.swf"></object>')
    assert "t.example.net" not in html and "<img" not in html and "style" not in html
    assert "x" in html and "y" in html


def test_links_keep_http_and_mailto_only_and_never_pass_the_referrer():
    html = sanitized_html('<a href="https://status.example.org/x" target="_blank">status</a>'
                          '<a href="javascript:alert(1)">bad</a><a href="data:text/html,x">d</a>'
                          '<a href="mailto:ops@example.org">mail</a><a href="/relative">r</a>')
    assert '<a href="https://status.example.org/x" rel="noopener noreferrer">status</a>' in html
    assert '<a href="mailto:ops@example.org" rel="noopener noreferrer">mail</a>' in html
    assert "javascript" not in html and "data:" not in html and "/relative" not in html


def test_deeply_nested_html_is_shown_as_its_escaped_text():
    html = sanitized_html("<div>" * 5_000 + "<b>deep &amp; <i>down</i></b>")
    assert html == "<p>deep &amp; down</p>"


def test_the_real_html_only_message_keeps_its_words_and_links():
    html = parsed(eml("html_only_remote")).html
    assert "Have a nice Christmas time." in html and "Brilliant!" in html
    assert html.count('rel="noopener noreferrer"') == 4


def test_the_text_of_html_leaves_out_what_is_never_shown():
    text = text_of_html("<html><head><title>T</title><style>p{}</style></head><body>"
                        "<p>One&nbsp;two</p><script>var x</script><div>three<br>four</div>"
                        "</body></html>")
    assert text == "One two\n\nthree\nfour"
