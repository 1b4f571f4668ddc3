"""Process helpers for the supervisors: children that do not outlive their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Meant to run in a freshly started child (``preexec_fn`` or first thing in a target),
    so that a SIGKILLed supervisor leaves no orphans behind.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def detach_and_die_with_parent() -> None:
    """New session (so a terminal's Ctrl-C reaches only the supervisor) + parent-death signal."""
    os.setsid()
    die_with_parent()
