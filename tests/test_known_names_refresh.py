"""The recogniser reloads known names from storage on a schedule, and survives a failed load."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.core.entity_recall import KnownName
from workers.nlp import Recogniser, known_names_loader


def no_entities(text: str) -> Any:
    """A stand-in for the spaCy pipeline that finds nothing: only recall speaks."""
    return SimpleNamespace(ents=())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def texts(rec: Recogniser, text: str) -> list[str]:
    return [m.text for m in rec.recognise(text)]


def test_names_are_loaded_first_and_then_every_interval() -> None:
    clock, loads = Clock(), []

    def loader() -> list[KnownName]:
        loads.append(clock.now)
        return [KnownName("Palestinian Authority", "organization")] if len(loads) > 1 else []

    rec = Recogniser(no_entities, loader=loader, refresh_seconds=600, clock=clock)  # type: ignore[arg-type]
    text = "The Palestinian Authority and the U.S. spoke."

    assert texts(rec, text) == ["U.S."]  # the gazetteer is always known
    clock.now = 599
    assert texts(rec, text) == ["U.S."] and loads == [0]
    clock.now = 600
    assert texts(rec, text) == ["Palestinian Authority", "U.S."] and loads == [0, 600]
    assert rec.known_count == 1


def test_a_failed_load_keeps_the_old_names_until_the_next_interval() -> None:
    clock, calls = Clock(), [0]

    def loader() -> list[KnownName]:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError("database down")
        return [KnownName("Palestinian Authority", "organization")]

    rec = Recogniser(no_entities, loader=loader, refresh_seconds=10, clock=clock)  # type: ignore[arg-type]
    rec.recognise("")
    clock.now = 10
    assert texts(rec, "The Palestinian Authority said.") == ["Palestinian Authority"]
    clock.now = 15
    rec.recognise("")
    assert calls[0] == 2  # retried only after the interval
    clock.now = 20
    rec.recognise("")
    assert calls[0] == 3


def test_recall_can_be_switched_off() -> None:
    rec = Recogniser(no_entities, recall=False)  # type: ignore[arg-type]
    rec.refresh_known([KnownName("Palestinian Authority", "organization")])
    assert rec.recognise("The Palestinian Authority and the U.S.") == []


def test_loader_reads_stored_names(db: sessionmaker[Session]) -> None:
    assert known_names_loader(db, limit=10)() == []
