"""Self-check of the SessionManager-level peer: python-omemo devices talking XML through a Directory."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from .session_manager import NS_LEGACY, NS_OMEMO2, NS_SCE, Directory, SMPeer, SMPeerError

A, B = "alice@example.org", "bob@example.net"
NAMESPACES = [NS_OMEMO2, NS_LEGACY]


def key_elems(encrypted: ET.Element) -> list[ET.Element]:
    ns = encrypted.tag[1:].partition("}")[0]
    return list(encrypted.iter(f"{{{ns}}}key"))


def rids(encrypted: ET.Element) -> list[int]:
    return sorted(int(k.get("rid", "0")) for k in key_elems(encrypted))


def is_kex(key: ET.Element) -> bool:
    return key.get("kex") in ("true", "1") or key.get("prekey") in ("true", "1")


def deliver_empty(sender: SMPeer, peers: list[SMPeer]) -> list[tuple[SMPeer, int]]:
    """Deliver ``sender``'s queued empty messages to every peer of the recipient JID holding a key."""
    delivered = []
    for jid, elem in sender.take_sent_empty():
        for peer in peers:
            if peer.bare_jid == jid and peer.device_id in rids(elem):
                result = peer.decrypt(sender.bare_jid, elem)
                assert result.plaintext is None and result.body is None
                assert result.sender_device == sender.device_id
                delivered.append((peer, result.sender_device))
    return delivered


@pytest.mark.parametrize("ns", NAMESPACES)
def test_conversation_one_namespace(ns: str) -> None:
    d = Directory()
    a1 = SMPeer.create(d, A, namespaces=(ns,))
    a2 = SMPeer.create(d, A, namespaces=(ns,))
    b = SMPeer.create(d, B, namespaces=(ns,))
    list_tag = "devices" if ns == NS_OMEMO2 else "list"
    published = d.device_list(A, ns)
    assert published is not None and published.tag == f"{{{ns}}}{list_tag}"
    assert sorted(d.device_ids(A, ns)) == sorted([a1.device_id, a2.device_id])
    bundle = d.bundle(B, ns, b.device_id)
    assert bundle is not None and bundle.tag == f"{{{ns}}}bundle"
    other = NS_LEGACY if ns == NS_OMEMO2 else NS_OMEMO2
    assert d.device_list(A, other) is None

    # First message: key exchanges for bob and for alice's other device.
    out = a1.encrypt([B], "hello bob")
    assert list(out) == [ns]
    msg = out[ns]
    assert msg.tag == f"{{{ns}}}encrypted"
    assert rids(msg) == sorted([a2.device_id, b.device_id])
    assert all(is_kex(k) for k in key_elems(msg))
    for peer in (b, a2):
        got = peer.decrypt(A, msg)
        assert (got.namespace, got.sender_device, got.body) == (ns, a1.device_id, "hello bob")
        assert got.plaintext is not None
        if ns == NS_OMEMO2:
            assert got.envelope is not None and got.envelope.tag == f"{{{NS_SCE}}}envelope"
            assert got.envelope.find(f"{{{NS_SCE}}}from").get("jid") == A  # type: ignore[union-attr]
            assert got.envelope.find(f"{{{NS_SCE}}}to").get("jid") == B  # type: ignore[union-attr]
        else:
            assert got.plaintext == b"hello bob"

    # Both receivers completed the key exchange with an empty message to alice.
    assert [jid for jid, _ in b.sent_empty] == [A] and [jid for jid, _ in a2.sent_empty] == [A]
    assert len(deliver_empty(b, [a1, a2])) == 1
    assert len(deliver_empty(a2, [a1, a2])) == 1
    assert a1.sent_empty == []  # completions received do not need an answer

    # Bob answers: for both alice devices; a2 is new to him, so a key exchange to a2 only.
    reply = b.encrypt([A], "hi alice <&>")[ns]
    assert rids(reply) == sorted([a1.device_id, a2.device_id])
    assert {int(k.get("rid", "0")): is_kex(k) for k in key_elems(reply)} == {a1.device_id: False, a2.device_id: True}
    for peer in (a1, a2):
        got = peer.decrypt(B, reply)
        assert (got.sender_device, got.body) == (b.device_id, "hi alice <&>")
    assert a1.sent_empty == []
    deliver_empty(a2, [b])

    # Confirmed sessions: no more key exchanges from alice's first device.
    again = a1.encrypt([B], "second")[ns]
    assert not any(is_kex(k) for k in key_elems(again))
    assert b.decrypt(A, again).body == "second"
    assert a2.decrypt(A, again).body == "second"


def test_both_namespaces_on_one_device() -> None:
    d = Directory()
    a1 = SMPeer.create(d, A)  # both backends, OMEMO 2 preferred
    a2 = SMPeer.create(d, A, namespaces=(NS_OMEMO2,))
    b = SMPeer.create(d, B, namespaces=(NS_LEGACY,))
    assert a1.device_id in d.device_ids(A, NS_OMEMO2) and a1.device_id in d.device_ids(A, NS_LEGACY)
    assert d.bundle(A, NS_LEGACY, a1.device_id) is not None and d.bundle(A, NS_OMEMO2, a1.device_id) is not None

    out = a1.encrypt([B], "to everyone")
    assert set(out) == {NS_OMEMO2, NS_LEGACY}
    assert rids(out[NS_LEGACY]) == [b.device_id]
    assert rids(out[NS_OMEMO2]) == [a2.device_id]
    assert b.decrypt(A, out[NS_LEGACY]).body == "to everyone"
    assert a2.decrypt(A, out[NS_OMEMO2]).body == "to everyone"
    with pytest.raises(SMPeerError):
        b.decrypt(A, out[NS_OMEMO2])  # namespace not loaded by bob
    deliver_empty(b, [a1])
    deliver_empty(a2, [a1])

    # Bob (legacy only) answers: alice's legacy-capable device gets it, a2 cannot.
    reply = b.encrypt([A], "legacy reply")
    assert list(reply) == [NS_LEGACY] and rids(reply[NS_LEGACY]) == [a1.device_id]
    got = a1.decrypt(B, reply[NS_LEGACY])
    assert (got.namespace, got.body, got.envelope) == (NS_LEGACY, "legacy reply", None)
    with pytest.raises(SMPeerError):
        a2.decrypt(B, reply[NS_LEGACY])

    # Forcing legacy for everybody via the priority list: a2 (OMEMO 2 only) is left out.
    only_legacy = a1.encrypt([B], "legacy only", namespaces=[NS_LEGACY])
    assert list(only_legacy) == [NS_LEGACY] and rids(only_legacy[NS_LEGACY]) == [b.device_id]
    assert b.decrypt(A, only_legacy[NS_LEGACY]).body == "legacy only"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_heartbeat_after_staleness_threshold(ns: str) -> None:
    d = Directory()
    a = SMPeer.create(d, A, namespaces=(ns,))
    b = SMPeer.create(d, B, namespaces=(ns,), staleness_threshold=2)
    b.decrypt(A, a.encrypt([B], "m0")[ns])
    deliver_empty(b, [a])
    for i in range(1, 5):
        assert b.decrypt(A, a.encrypt([B], f"m{i}")[ns]).body == f"m{i}"
    # Receiving chain longer than 2 without answering: one heartbeat per further message.
    beats = b.take_sent_empty()
    assert len(beats) == 2 and all(jid == A for jid, _ in beats)  # after m3 and m4
    for _, elem in beats:
        assert a.decrypt(B, elem).plaintext is None


def test_devices_published_later() -> None:
    d = Directory()
    a1 = SMPeer.create(d, A, namespaces=(NS_OMEMO2,))
    b_manual = SMPeer.create(d, B, namespaces=(NS_OMEMO2,), auto_refresh=False)
    b_manual.refresh_device_lists(A)
    b_manual.encrypt([A], "first")
    a2 = SMPeer.create(d, A, namespaces=(NS_OMEMO2,))  # appears after bob looked

    stale = b_manual.encrypt([A], "stale view")[NS_OMEMO2]
    assert rids(stale) == [a1.device_id]
    b_manual.refresh_device_lists(A)
    fresh = b_manual.encrypt([A], "fresh view")[NS_OMEMO2]
    assert rids(fresh) == sorted([a1.device_id, a2.device_id])
    assert a2.decrypt(B, fresh).body == "fresh view"

    # auto_refresh (default) picks up a later device on the next encrypt.
    c = SMPeer.create(d, "carol@example.com", namespaces=(NS_OMEMO2,))
    c.encrypt([A], "x")
    a3 = SMPeer.create(d, A, namespaces=(NS_OMEMO2,))
    out = c.encrypt([A], "y")[NS_OMEMO2]
    assert a3.device_id in rids(out)
    assert a3.decrypt("carol@example.com", out).body == "y"


def test_errors() -> None:
    d = Directory()
    a = SMPeer.create(d, A, namespaces=(NS_OMEMO2,))
    b = SMPeer.create(d, B, namespaces=(NS_OMEMO2,))
    c = SMPeer.create(d, "carol@example.com", namespaces=(NS_OMEMO2,))
    msg = a.encrypt([B], "for bob")[NS_OMEMO2]
    with pytest.raises(SMPeerError):
        c.decrypt(A, msg)  # no key for carol
    with pytest.raises(SMPeerError):
        b.decrypt(A, ET.Element("{urn:xmpp:omemo:2}encrypted"))  # schema violation
    with pytest.raises(SMPeerError):
        a.encrypt(["nobody@example.com"], "no devices")
    assert b.decrypt(A, msg).body == "for bob"
    with pytest.raises(SMPeerError):
        b.decrypt(A, msg)  # replay
