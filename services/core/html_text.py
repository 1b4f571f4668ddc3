"""Turn an HTML fragment (RSS description or content:encoded) into paragraphs of plain text."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# fmt: off
# Elements whose content is never article text: code, embeds, chrome and photo captions.
SKIPPED_TAGS = frozenset((
    "script", "style", "noscript", "iframe", "figure", "figcaption", "aside", "nav", "form",
    "button", "svg", "template", "head", "title", "select", "textarea", "object", "video",
    "audio", "canvas", "math",
))
# Elements that start and end a paragraph.
BLOCK_TAGS = frozenset((
    "p", "div", "section", "article", "header", "footer", "main", "h1", "h2", "h3", "h4", "h5",
    "h6", "li", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", "table", "thead", "tbody",
    "tfoot", "tr", "td", "th", "caption", "hr", "address", "details", "summary", "center",
    "body", "html",
))
_INLINE_TAGS = frozenset((
    "a", "b", "i", "em", "strong", "span", "br", "img", "small", "sup", "sub", "u", "s", "abbr",
    "cite", "code", "q", "time", "mark", "wbr", "picture",
))
# fmt: on
_HTML_NAMES = BLOCK_TAGS | SKIPPED_TAGS | _INLINE_TAGS
_TAG_RE = re.compile(r"</?([a-zA-Z][a-zA-Z0-9]*)(?:\s[^<>]*)?/?>")
_ENTITY_RE = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_SPACE_RE = re.compile(r"\s+")


class _TextCollector(HTMLParser):
    """Collects paragraphs; a paragraph ends at every block boundary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._lines: list[list[str]] = [[]]  # text pieces of the current paragraph, per <br>
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skip_depth += 1
        elif self._skip_depth:
            return
        elif tag == "br":
            # Two <br> in a row are how many CMSes spell a paragraph break.
            if len(self._lines) > 1 and not "".join(self._lines[-1]).strip():
                self.flush()
            else:
                self._lines.append([])
        elif tag in BLOCK_TAGS:
            self.flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in SKIPPED_TAGS:  # <svg/> opens nothing, so must not start skipping
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif not self._skip_depth and tag in BLOCK_TAGS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._lines[-1].append(data)

    def flush(self) -> None:
        lines = (_SPACE_RE.sub(" ", "".join(pieces)).strip() for pieces in self._lines)
        text = "\n".join(line for line in lines if line)
        if text:
            self.paragraphs.append(text)
        self._lines = [[]]


def html_to_text(markup: str) -> str:
    """Main text of an HTML fragment: paragraphs separated by a blank line.

    Block elements become paragraphs, ``<br>`` a newline, entities are unescaped and runs of
    whitespace collapsed; scripts, embeds, navigation and figures are dropped. Never raises:
    markup the parser cannot follow falls back to stripping tags.
    """
    collector = _TextCollector()
    try:
        collector.feed(markup)
        collector.close()
        collector.flush()
    except Exception:  # the stdlib parser can assert on odd markup; text beats an error here
        return _strip_tags(markup)
    return "\n\n".join(collector.paragraphs)


def looks_like_html(s: str) -> bool:
    """True when ``s`` holds a known HTML tag or a character reference, i.e. needs html_to_text."""
    if _ENTITY_RE.search(s):
        return True
    return any(m.group(1).lower() in _HTML_NAMES for m in _TAG_RE.finditer(s))


def _strip_tags(markup: str) -> str:
    text = html.unescape(_TAG_RE.sub(" ", markup))
    return _SPACE_RE.sub(" ", text).strip()
