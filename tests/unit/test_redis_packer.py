"""DirectPacker packs every command to the bytes redis-py's own packer gives, or refuses it
with the same error."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from redis.connection import Connection

from services.redis_packer import BUFFER_CUTOFF, DirectPacker, command_packer


class Colour(enum.IntEnum):
    RED = 1


def packed(connection: Connection, args: tuple[Any, ...]) -> bytes | str:
    """The bytes ``connection`` would send for ``args``, or the error it raises, by type."""
    try:
        return b"".join(bytes(chunk) for chunk in connection.pack_command(*args))
    except Exception as error:  # the comparison is the point
        return type(error).__name__


# A connection object packs without connecting.
REDIS_PY = Connection()
DIRECT = Connection(command_packer=DirectPacker())

heads = st.sampled_from(["SET", "HSET", "CLIENT SETNAME", "config get", b"ZADD", b"SCRIPT LOAD"])
arguments = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary().map(bytearray),
    st.just(Colour.RED),
    # Values around redis-py's cut-off, past which it sends a value as a chunk of its own.
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(1500, 6001)),
    st.builds(
        lambda b, n: memoryview(b * n), st.binary(min_size=1, max_size=3), st.integers(1, 6001)
    ),
)


@settings(max_examples=600, deadline=None)
@given(head=heads, rest=st.lists(arguments, max_size=6))
@example(head="SET", rest=["k\ud800"])  # a lone surrogate: UTF-8 refuses it
@example(head="ZADD", rest=["z", float("nan"), "m", float("-inf"), "n", -0.0, "o"])
@example(head="SET", rest=[Colour.RED, True])
@example(head="HSET", rest=["h", bytearray(b"a b"), memoryview(b"x" * (BUFFER_CUTOFF + 1))])
def test_a_command_packs_as_redis_py_packs_it(head: str | bytes, rest: list[Any]) -> None:
    args = (head, *rest)
    assert packed(DIRECT, args) == packed(REDIS_PY, args)


def test_plain_arguments_are_packed_in_one_piece_by_hiredis() -> None:
    chunks = DirectPacker().pack("CLIENT SETNAME", "w\u00e9", 3, 1.5, b"\x00")
    assert chunks == [
        b"*6\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\nw\xc3\xa9\r\n$1\r\n3\r\n$3\r\n1.5\r\n"
        b"$1\r\n\x00\r\n"
    ]


def test_the_packer_is_built_when_hiredis_is_installed() -> None:
    pytest.importorskip("hiredis")
    assert isinstance(command_packer(), DirectPacker)
