"""The socket channel of the process fabrics, alone: what arrives is never lost to how the
other end closed."""

from __future__ import annotations

import socket

import pytest

from multi import wire
from multi.channel import Channel


def test_the_last_message_of_a_peer_that_ends_with_bytes_unread_is_read() -> None:
    # A slave ended by its command leaves the master's next batch unread; its socket then
    # resets, and its last report must still be read.
    ours, theirs = socket.socketpair()
    master, slave = Channel(ours), Channel(theirs)
    master.send(wire.dumps("a batch the slave never reads"))
    slave.send(wire.dumps("the last report"))
    slave.close()
    ours.setblocking(False)

    assert master.read() == ["the last report"]
    with pytest.raises(EOFError):  # then the end (the reset was told once)
        master.read()
    master.close()


def test_a_peer_that_closes_cleanly_gives_its_messages_then_eof() -> None:
    ours, theirs = socket.socketpair()
    master, slave = Channel(ours), Channel(theirs)
    for text in ("one", "two"):
        slave.send(wire.dumps(text))
    slave.close()
    ours.setblocking(False)

    assert master.read() == ["one", "two"]
    with pytest.raises(EOFError):
        master.read()
    master.close()


def test_a_blocking_receive_gives_the_last_message_then_eof_when_the_peer_resets() -> None:
    # A slave waits blocking; its master may be gone with the slave's last report unread,
    # which resets the socket.
    ours, theirs = socket.socketpair()
    slave, master = Channel(ours), Channel(theirs)
    slave.send(wire.dumps("a report the master never reads"))
    master.send(wire.dumps("the last batch"))
    master.close()

    assert slave.receive() == "the last batch"
    with pytest.raises(EOFError):
        slave.receive()
    slave.close()
