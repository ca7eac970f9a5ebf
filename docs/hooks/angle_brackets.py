"""MkDocs hook: physics notation such as <M>, <phi(n) phi(n + x)> or <S(tau) S(tau + t)> in the
pages and docstrings is text, not HTML. Python-Markdown passes anything that looks like a tag
through as raw HTML (so a browser would hide it); after conversion, every "tag" that is not a
lowercase HTML element is escaped back to text."""

from __future__ import annotations

import re

HTML_ELEMENTS = frozenset("""
a abbr b blockquote body br button caption code col colgroup dd del details div dl dt em figcaption
figure footer form h1 h2 h3 h4 h5 h6 head header hr html i img input ins kbd label li link main mark
meta nav ol p path pre q s section small span strong style sub summary sup svg table tbody td
template textarea tfoot th thead title tr u ul script noscript iframe
""".split())

TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_]*)([^<>]*)>")


def _escape(match: re.Match) -> str:
    name = match.group(2)
    if name in HTML_ELEMENTS:  # lowercase: Markdown's own output
        return match.group(0)
    return "&lt;" + match.group(0)[1:-1] + "&gt;"


def on_page_content(html: str, **kwargs) -> str:
    return TAG.sub(_escape, html)
