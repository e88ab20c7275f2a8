"""Text that came from outside (requests, the query string, the database) shown as text.

Streamlit reads Markdown in titles, headers, captions, alerts, metric labels *and values*,
expander and tab labels, and `st.table` cells: a webhook parameter such as
`[click](https://evil.example)` or `![x](https://evil.example/pixel.png)` would become a link or
an image the operator's browser fetches. Every value we did not write ourselves goes through
`plain()` (or `code()`) before it reaches one of those.
"""

from __future__ import annotations

import re
import string

# CommonMark lets any ASCII punctuation character be backslash-escaped, and an escaped one is
# always literal text: no emphasis, link, image, HTML, entity, `<…>` autolink, math (`\$`),
# or Streamlit directive, icon or emoji (`\:`).
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
# GFM also links bare `http://…`, `www.…` and `a@b.c` in the text *after* escapes are resolved,
# only where the character before is a space or punctuation (or none). A WORD JOINER (U+2060,
# zero width, invisible) before each URL start and after each `@` stops that.
_BARE_URL = re.compile(r"(https?://|www\.)", re.IGNORECASE)
WORD_JOINER = "\u2060"
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: object) -> str:
    return _LINE_BREAKS.sub(" ", "" if value is None else str(value))


def plain(value: object) -> str:
    """`value` as Markdown that renders as exactly its text (line breaks become spaces; URLs
    and e-mail addresses carry an invisible word joiner so they stay unlinked)."""
    text = _BARE_URL.sub(WORD_JOINER + r"\1", _one_line(value)).replace("@", "@" + WORD_JOINER)
    return _PUNCTUATION.sub(r"\\\1", text)


def code(value: object) -> str:
    """`value` as an inline code span (Markdown), whatever backticks it holds."""
    text = _one_line(value)
    if not text:
        return ""
    # A code span ends at a backtick run of its opening length: open with a longer one. The
    # parser strips one space from each end when both have one: pad when an end is a backtick
    # (it would join the fence) or when both ends are spaces (they would be lost).
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if "`" in (text[0], text[-1]) or text[0] == text[-1] == " " else ""
    return f"{fence}{pad}{text}{pad}{fence}"
