"""Article pages for the tests and the bench: real article texts in realistic page chrome.

The texts are real: the seed article (``seeds/``) and the LA Times capture's items
(``content:encoded`` paragraphs, with the photo captions and credits the feed carries). The
chrome around them is what trafilatura must leave out: navigation, a cookie banner, the
byline, a figure with caption and credit, "Related" links, a newsletter sign-up box, an
advertisement slot, scripts, styles and the footer.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from services.core.html_text import html_to_text
from services.core.plaintext import parse_plaintext

REPO = Path(__file__).resolve().parent.parent
FEEDS = REPO / "tests" / "data" / "feeds"
SEED = REPO / "seeds" / "000_a39bf01833f5003a.txt"
LATIMES = FEEDS / "latimes__20200421T200942Z.xml"
NYTIMES = FEEDS / "nytimes__20200517T221855Z.xml"
_NS = {
    "content": "http://purl.org/rss/1.0/modules/content/",
    "media": "http://search.yahoo.com/mrss/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
# What the chrome says; none of it may reach an article's text.
CHROME_TEXT = (
    "We use cookies",
    "Accept all",
    "Sign up for",
    "newsletter",
    "Related:",
    "Advertisement",
    "More from the Times",
    "Copyright ©",
    "Terms of Service",
    "By Times staff",
)


@dataclass(frozen=True)
class Article:
    """A real article: headline, body paragraphs, and what is not body text."""

    title: str
    paragraphs: tuple[str, ...]
    caption: str | None = None
    credit: str | None = None
    related: tuple[str, str] | None = None  # (headline, date)
    author: str | None = None

    @property
    def body(self) -> str:
        """The body as Extracted.text spells it: paragraphs separated by a blank line."""
        return "\n\n".join(self.paragraphs)


@cache
def seed_article() -> Article:
    parsed = parse_plaintext(SEED.read_text(encoding="utf-8"))
    related = parsed.related[0]
    return Article(
        title=parsed.title,
        paragraphs=tuple(parsed.body.split("\n\n")),
        caption=" ".join(parsed.captions[1:]) or None,
        credit=parsed.credits[0],
        related=(related.text, related.date),
    )


@dataclass(frozen=True)
class LatimesItem:
    title: str
    url: str
    paragraph: str
    caption: str | None
    credit: str | None
    author: str | None


@cache
def latimes_items() -> tuple[LatimesItem, ...]:
    """The LA Times capture's items, read straight from the XML."""
    items = []
    for node in ET.parse(LATIMES).getroot().iterfind("./channel/item"):
        items.append(
            LatimesItem(
                title=(node.findtext("title") or "").strip(),
                url=(node.findtext("link") or "").strip(),
                paragraph=html_to_text(node.findtext("content:encoded", "", _NS)),
                caption=_text(node.findtext("media:content/media:description", None, _NS)),
                credit=_text(node.findtext("media:content/media:credit", None, _NS)),
                author=_text(node.findtext("dc:creator", None, _NS)),
            )
        )
    return tuple(items)


def latimes_articles(per_article: int = 5) -> list[Article]:
    """Articles of ``per_article`` consecutive LA Times paragraphs, headed by the first
    item's headline, photo caption and credit (every paragraph used once)."""
    items = latimes_items()
    found = []
    for start in range(0, len(items) - per_article + 1, per_article):
        group = items[start : start + per_article]
        found.append(
            Article(
                title=group[0].title,
                paragraphs=tuple(i.paragraph for i in group),
                caption=group[0].caption,
                credit=group[0].credit,
                related=(group[-1].title, "April 21, 2020"),
                author=group[0].author,
            )
        )
    return found


def article_page(
    article: Article,
    *,
    canonical: str | None = None,
    og_url: str | None = None,
    lang: str = "en",
    charset: str | None = "utf-8",
) -> str:
    """``article`` as a news site would serve it."""
    e = html.escape
    parts: list[str] = []
    for i, paragraph in enumerate(article.paragraphs):
        parts.append(f"<p>{e(paragraph)}</p>")
        if i == 0 and article.caption:
            credit = f' <span class="credit">({e(article.credit)})</span>' if article.credit else ""
            parts.append(
                '<figure class="lead-photo"><img src="/img/lead.jpg" alt="">'
                f"<figcaption>{e(article.caption)}{credit}</figcaption></figure>"
            )
        if i == 1 and article.related:
            parts.append(
                '<aside class="related"><p>Related: '
                f'<a href="/related/story">{e(article.related[0])}</a> '
                f"<time>{e(article.related[1])}</time></p></aside>"
            )
        if i == 2:
            parts.append(
                '<div class="newsletter-signup"><h3>Essential California</h3>'
                "<p>Sign up for the Essential California newsletter to get the day's top "
                'stories in your inbox.</p><form><input type="email" placeholder="Email">'
                "<button>Sign up</button></form></div>"
            )
        if i == 3:
            parts.append('<div class="ad-slot"><p>Advertisement</p></div>')
    head = [f'<meta charset="{charset}">'] if charset else []
    head.append(f"<title>{e(article.title)} - Los Angeles Times</title>")
    if canonical:
        head.append(f'<link rel="canonical" href="{e(canonical)}">')
    if og_url:
        head.append(f'<meta property="og:url" content="{e(og_url)}">')
    ld = {"@context": "https://schema.org", "@type": "NewsArticle", "headline": article.title}
    head.append(f'<script type="application/ld+json">{json.dumps(ld)}</script>')
    head.append("<style>.cookie-banner{position:fixed}</style>")
    head.append("<script>window.dataLayer=[];/* <p>not text</p> */</script>")
    byline = article.author or "Times staff"
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head>{"".join(head)}</head>
<body>
<div class="cookie-banner"><p>We use cookies to give you the best experience. By using this
site you agree to our use of cookies.</p><button>Accept all</button></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/california">California</a></li>
<li><a href="/politics">Politics</a></li><li><a href="/world-nation">World &amp; Nation</a></li>
</ul></nav></header>
<main><article>
<h1>{e(article.title)}</h1>
<div class="byline">By <a href="/people/staff">{e(byline)}</a>
<time datetime="2020-04-21T12:00:00-07:00">April 21, 2020 12 PM PT</time></div>
<div class="story-body">{"".join(parts)}</div>
</article>
<section class="more-stories"><h2>More from the Times</h2><ul>
<li><a href="/a">Another story about something else entirely</a></li>
<li><a href="/b">Yet another story on a different subject</a></li></ul></section>
</main>
<footer><p>Copyright © 2020, Los Angeles Times | Terms of Service | Privacy Policy |
Do Not Sell My Personal Information</p></footer>
<script>console.log("analytics")</script>
</body></html>"""


def summary_feed_pages(
    capture: Path, base: str, *, extra_paragraphs: Sequence[str]
) -> tuple[bytes, dict[str, tuple[Article, str]]]:
    """A summary-only capture (BBC, NYT) with its item links moved to ``base``, and for each
    new link path the article behind it and its page.

    Each article is the item's own summary followed by three LA Times paragraphs (distinct
    per item), so the page holds clearly more text than the feed.
    """
    body = capture.read_bytes()
    root = ET.fromstring(body)
    pages: dict[str, tuple[Article, str]] = {}
    extra = list(extra_paragraphs)
    origin = ""
    for node in root.iterfind("./channel/item"):
        link = (node.findtext("link") or "").strip()
        scheme, _, rest = link.partition("://")
        origin = f"{scheme}://{rest.split('/', 1)[0]}/"
        path = "/" + rest.split("/", 1)[1]
        article = Article(
            title=(node.findtext("title") or "").strip(),
            paragraphs=(html_to_text(node.findtext("description") or ""), *extra[:3]),
            author=_text(node.findtext("dc:creator", None, _NS)),
        )
        del extra[:3]
        # The page names itself on the publisher's https origin, with a tracking parameter.
        canonical = f"https://{urlsplit(base).hostname}{path}?utm_source=feed&utm_medium=rss"
        pages[path] = (article, article_page(article, canonical=canonical))
    return body.replace(origin.encode(), base.rstrip("/").encode() + b"/"), pages


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None
