"""Tests for peerd.net.addressbook."""

import json

from zope.interface.verify import verifyObject

from peerd.interfaces import IDiscoverySource, IPeerObserver
from peerd.net.addressbook import MAX_ENTRIES, AddressBook
from peerd.net.connection import PeerInfo
from peerd.peerid import PeerID


def peer(n: int, addresses=()) -> PeerInfo:
    pid = PeerID(n.to_bytes(20, "big"))
    return PeerInfo(pid, "127.0.0.1:1", "outbound", listen_addresses=list(addresses))


def test_records_and_survives_reload(tmp_path):
    """A peer seen in a session is written to peers.json and read back after a restart."""
    clock = iter(range(100, 200)).__next__
    book = AddressBook(tmp_path / "peers.json", clock)
    verifyObject(IPeerObserver, book)
    verifyObject(IDiscoverySource, book)
    info = peer(1, [f"{PeerID((1).to_bytes(20, 'big'))}@127.0.0.1:7845"])
    book.peer_connected(info)
    again = AddressBook(tmp_path / "peers.json", clock)
    assert again.peers[info.peer_id].addresses == info.listen_addresses
    assert again.peers[info.peer_id].last_seen == 100
    assert again.addresses() == info.listen_addresses


def test_damaged_file_is_ignored_not_fatal(tmp_path):
    """An unreadable book is logged and ignored; bad entries are skipped."""
    path = tmp_path / "peers.json"
    path.write_text("{not json")
    assert AddressBook(path, lambda: 1.0).peers == {}
    good = str(PeerID((2).to_bytes(20, "big")))
    path.write_text(json.dumps({"peers": {"nonsense": {}, good: {"addresses": ["x"]}}}))
    assert [str(p) for p in AddressBook(path, lambda: 1.0).peers] == [good]


def test_bounded(tmp_path):
    """The book forgets the least recently seen peer beyond MAX_ENTRIES."""
    times = iter(range(10**6)).__next__
    book = AddressBook(tmp_path / "peers.json", times)
    for n in range(MAX_ENTRIES + 5):
        book.record(peer(n + 1))
    assert len(book.peers) == MAX_ENTRIES
    assert peer(1).peer_id not in book.peers
