"""Plumbing shared by the administration commands (``newsdesk feeds``, ``newsdesk keys``).

One engine per run, actions that get an :class:`AdminContext`, and one error policy: a
message ``<prog>: error [<code>]: <detail>`` on stderr and the exit status 1 when the thing
asked about does not exist or conflicts, 2 for usage, configuration or storage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.errors import Conflict, NewsdeskError, NotFound

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class AdminContext:
    """What an action needs: settings, sessions and the two output streams."""

    prog: str
    settings: Settings
    sessions: sessionmaker[Session]
    out: TextIO
    err: TextIO

    def error(self, code: str, message: str) -> None:
        print(f"{self.prog}: error [{code}]: {message}", file=self.err)

    def read(self, fn: Callable[[Session], T]) -> T:
        with self.sessions() as session:
            return fn(session)

    def write(self, fn: Callable[[Session], T]) -> T:
        from services.db.engine import transaction

        with transaction(self.sessions) as session:
            return fn(session)


Action = Callable[[AdminContext, argparse.Namespace], int]


def run_action(prog: str, settings: Settings, action: Action, args: argparse.Namespace) -> int:
    """Run ``action`` with a fresh engine; map errors to messages and exit statuses."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from services.db.engine import make_engine, session_factory

    engine = make_engine(settings.database_url, role="admin")
    ctx = AdminContext(prog, settings, session_factory(engine), sys.stdout, sys.stderr)
    try:
        return action(ctx, args)
    except (NotFound, Conflict) as exc:
        ctx.error(exc.code, str(exc))
        return EXIT_FAILED
    except NewsdeskError as exc:
        ctx.error(exc.code, str(exc))
        return EXIT_USAGE
    except (OperationalError, ProgrammingError) as exc:
        detail = str(exc.orig or exc).strip().splitlines()[0]
        ctx.error("storage_unavailable", f"{detail} (is DATABASE_URL right and migrated?)")
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`export | head`): stop quietly, as other CLI tools do, and
        # point stdout at devnull so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        engine.dispose()
