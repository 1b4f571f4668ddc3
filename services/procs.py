"""Process helpers for the supervisors: children that do not outlive their parent."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    """The C library this interpreter runs on, already loaded: no search for the file
    (``ctypes.util.find_library`` runs ``ldconfig`` in a subprocess, which a child between
    fork and exec must not do)."""
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Meant to run in a freshly started child (``preexec_fn`` or first thing in a target),
    so that a SIGKILLed supervisor leaves no orphans behind.
    """
    if not sys.platform.startswith("linux"):
        return
    _libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


_forking_pid = 0  # set just before each fork; the child reads its copy
_forks_armed = False


def forks_die_with_this_process() -> None:
    """Arm the parent-death signal in every process forked from this one from now on
    (and in what those fork in turn, each tied to its own parent).

    rq's worker forks its scheduler with ``multiprocessing``, and a fork does not inherit
    the parent-death signal: a worker killed with SIGKILL (the OOM killer, a crash) would
    leave its scheduler running on its own, holding the scheduler lock, for good. Armed in
    the child right after the fork, SIGTERM stops it warmly instead (rq's scheduler releases
    its locks). A parent already gone by then is caught by the check that follows.
    """
    global _forks_armed
    if _forks_armed:
        return
    _forks_armed = True
    os.register_at_fork(before=_note_forking_pid, after_in_child=_arm_child)


def _note_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _arm_child() -> None:
    die_with_parent()
    if os.getppid() != _forking_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def detach_and_die_with_parent() -> None:
    """New session (so a terminal's Ctrl-C reaches only the supervisor) + parent-death signal."""
    os.setsid()
    die_with_parent()


def tune_gc() -> None:
    """Keep the garbage collector from stalling the event loop or slowing every job.

    Called once a role is set up. With 10,000 feeds a full collection walks every object
    the process holds and stalled the poller's loop for over 200 ms (bench/poll.py).
    Objects that live as long as the process (modules, the app's setup, a worker's NER
    model) are frozen out of collection, and the young generation is collected less often:
    the poller and workers allocate many short-lived objects per request or job.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 100, 1000)


# glibc's mallopt parameters: allocations this large or larger get a mapping of their own,
# unmapped when freed; free memory at the top of the heap beyond this goes back to the kernel.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MB = 64
TRIM_THRESHOLD_MB = 128


def keep_freed_memory() -> bool:
    """Have the C allocator reuse freed memory instead of returning it to the kernel at once.

    For a process that runs spaCy: every batch allocates and frees arrays of several MB.
    glibc maps the larger ones afresh each time (its adaptive threshold stops at 32 MB) and
    trims the heap after each batch, so the kernel zero-fills new pages for every batch:
    about 1.1 ms of system time per article in bench/extract.py's loop. With these
    thresholds that time is gone and the process keeps at most TRIM_THRESHOLD_MB of free
    memory for reuse (the peak, VmHWM, is what it was). Returns whether the C library took
    the settings (glibc on Linux; others are left as they are).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MB << 20)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_MB << 20)
    )
