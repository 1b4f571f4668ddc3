"""Redis command packing in C for the service's synchronous clients.

redis-py packs each command by encoding every argument in Python (its ``Encoder.encode``:
a chain of isinstance checks and a str.encode per argument) and only then hands the tuple
to hiredis' C packer, which accepts str, bytes, int and float itself and formats them as
redis-py does (UTF-8; ``repr`` of a number). rq's bookkeeping is many small commands
(about 25 a job for a worker to start and finish an extraction job), and that Python step
was about a third of their CPU: ``bench/rq_bookkeeping.py`` measures 0.51-0.54 ms per job
with redis-py's packer and 0.36-0.39 ms with this one.

``DirectPacker`` gives hiredis the arguments as they are, and hands any command it refuses
(bool, None, bytearray, memoryview, an int subclass such as an IntEnum) to redis-py's own
packer, so every command is packed to the same bytes, or refused with the same error, as
without it. It assumes the client's default encoding (UTF-8, strict), which is what
``services.queue.redis_client`` uses.
"""

from __future__ import annotations

from typing import Any

try:
    import hiredis
    from redis._parsers.encoders import Encoder
    from redis.connection import HiredisRespSerializer, PythonRespSerializer

    HAVE_HIREDIS = True
except ImportError:  # hiredis is a dependency (redis[hiredis]); redis-py packs without it
    HAVE_HIREDIS = False

# redis-py's own cut-off: values longer than this go out as separate chunks (its connections
# use the same figure).
BUFFER_CUTOFF = 6000


class DirectPacker:
    """A redis-py ``command_packer`` that packs in C whenever hiredis accepts the arguments."""

    def __init__(self) -> None:
        encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        fallback = PythonRespSerializer(BUFFER_CUTOFF, encoder.encode)
        self._general = HiredisRespSerializer(fallback.pack, encoder.encode)  # type: ignore[no-untyped-call]

    def pack(self, *args: Any) -> list[bytes]:
        head = args[0]
        # As redis-py does: a command given with its subcommand ("CLIENT SETNAME") goes as
        # separate words.
        if isinstance(head, str):
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take: redis-py converts it or refuses it
            return self._general.pack(*args)  # type: ignore[no-any-return]


def command_packer() -> DirectPacker | None:
    """The packer for a new client (None: redis-py's default, when hiredis is missing)."""
    return DirectPacker() if HAVE_HIREDIS else None
