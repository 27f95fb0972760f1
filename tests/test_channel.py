"""The socket channel of the process fabrics, alone: what arrives is never lost to how the
other end closed."""

from __future__ import annotations

import socket
import threading
import time

import numpy
import pytest

from multi import wire
from multi.channel import Channel


@pytest.mark.parametrize("waits", [False, True], ids=["read", "receive"])
def test_the_last_message_of_a_peer_that_ends_with_bytes_unread_is_read(waits: bool) -> None:
    # A slave ended by its command leaves the master's next batch unread, and a master that
    # ends may leave a slave's last report unread: the socket then resets, and what the peer
    # sent last must still be read, by a master that reads without waiting and by a slave that
    # waits for its next batch.
    ours, theirs = socket.socketpair()
    reader, peer = Channel(ours), Channel(theirs)
    reader.send(wire.dumps("a message the peer never reads"))
    peer.send(wire.dumps("the last message"))
    peer.close()
    if not waits:
        ours.setblocking(False)

    take = (lambda: [reader.receive()]) if waits else reader.read
    assert take() == ["the last message"]
    with pytest.raises(EOFError):  # then the end (the reset was told once)
        take()
    reader.close()


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


@pytest.mark.parametrize("spin", [1.0, 1e-4], ids=["within-the-spin", "after-it"])
def test_a_receiver_that_looks_before_it_sleeps_takes_every_message_whole(spin: float) -> None:
    # A slave looks for its next batch for a moment before it sleeps on the socket: a message
    # that comes while it looks, or only once it sleeps, in pieces or large, arrives whole.
    ours, theirs = socket.socketpair()
    slave, master = Channel(ours), Channel(theirs)
    big = bytes(range(256)) * 4096  # (1 MiB: more than the scratch buffer and the socket take)

    def send_later() -> None:
        time.sleep(0.05)
        master.send(wire.dumps(("batch", big)))
        master.send(wire.dumps("goodbye"))
        master.close()

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        assert slave.receive(spin) == ("batch", big)
        assert slave.receive(spin) == "goodbye"
        with pytest.raises(EOFError):
            slave.receive(spin)
    finally:
        sender.join(5)
        slave.close()
    assert not sender.is_alive()


def test_a_message_is_at_hand_until_it_is_taken_whole_large_frames_included() -> None:
    # A slave leaves its descriptors in the capture files while its next batch is at hand:
    # once the last message is taken, nothing is, whatever the size of its frames.
    ours, theirs = socket.socketpair()
    slave, master = Channel(ours), Channel(theirs)
    assert not slave.at_hand()
    for payload in ("small", numpy.arange(1 << 18)):  # (2 MiB: a frame of its own)
        sender = threading.Thread(target=master.send, args=(wire.dumps(payload),))
        sender.start()  # (a large one fills the socket: it is written as it is read)
        deadline = time.monotonic() + 10
        while not slave.at_hand() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert slave.at_hand()
        received = slave.receive()
        sender.join(10)
        assert not sender.is_alive()
        assert type(received) is type(payload)
        assert not slave.at_hand()
    slave.close()
    master.close()


def test_a_channel_that_does_not_decode_gives_each_message_as_its_frames() -> None:
    # A slave shows that it holds a batch before it unpickles it: its channel gives frames,
    # small messages and large ones with out-of-band buffers alike, which rebuild whole.
    ours, theirs = socket.socketpair()
    slave, master = Channel(ours, decode=False), Channel(theirs)
    array = numpy.arange(1 << 18, dtype=numpy.float64)  # (2 MiB, out of band)

    def send() -> None:  # (a thread: the socket takes less than the array at once)
        master.send(wire.dumps("small"))
        master.send(wire.dumps({"array": array}))
        master.close()

    sender = threading.Thread(target=send)
    sender.start()
    small, large = slave.receive(), slave.receive()
    sender.join(10)
    assert not sender.is_alive()
    assert [type(frame) for frame in small] == [bytearray]
    assert wire.loads(small) == "small"
    assert len(large) == 2
    numpy.testing.assert_array_equal(wire.loads(large)["array"], array)
    slave.close()
