"""Vectors made by the independent implementations (vectors/generated/, python-x3dh,
python-doubleratchet, twomemo, oldmemo) reproduced byte for byte by our engine."""

from __future__ import annotations

from typing import Any

import pytest

from e2ee import x3dh
from e2ee.errors import DuplicateMessage
from e2ee.identity import IdentityKeyPair
from e2ee.legacy.wire import LEGACY
from e2ee.omemo2.wire import OMEMO2
from e2ee.session import PeerBundle, Session, accept, initiate

from .vectors import load

X3DH = load("generated/x3dh.json")["vectors"]
TRANSCRIPTS = [load("generated/ratchet_omemo2.json")["vectors"][0], load("generated/ratchet_legacy.json")["vectors"][0]]


def _h(x: str) -> bytes:
    return bytes.fromhex(x)


@pytest.mark.parametrize("v", [v for v in X3DH if v["valid_for_omemo"]], ids=lambda v: v["name"])
def test_x3dh_agreement(v: dict[str, Any]) -> None:
    f = OMEMO2 if v["config"] == "twomemo" else LEGACY
    inp, wire = v["inputs"], v["bundle_wire"]
    alice = IdentityKeyPair.from_seed(_h(inp["alice_ik_seed"]))
    bob = IdentityKeyPair.from_seed(_h(inp["bob_ik_seed"]))
    start = x3dh.initiate(
        f, alice, _h(wire["ik"]), _h(wire["spk"]), _h(wire["spk_sig"]), _h(wire["pk"]), _h(inp["alice_ek_priv"])
    )
    assert start.result.shared_secret == _h(v["shared_secret"])
    assert start.result.ad_send == _h(v["associated_data"])
    own_ik = f.own_identity(alice)
    passive = x3dh.respond(f, bob, _h(inp["bob_spk_priv"]), _h(inp["bob_opk_priv"]), own_ik, start.ek_pub)
    assert passive.shared_secret == _h(v["shared_secret"])


@pytest.mark.parametrize("t", TRANSCRIPTS, ids=lambda t: t["name"])
def test_ratchet_transcript(t: dict[str, Any]) -> None:
    f = OMEMO2 if t["flavour"] == "omemo2" else LEGACY
    inp, der = t["inputs"], t["derived"]
    ids = {
        "alice": IdentityKeyPair.from_seed(_h(inp["alice_ik_seed"])),
        "bob": IdentityKeyPair.from_seed(_h(inp["bob_ik_seed"])),
    }
    bw = der["bob_bundle_wire"]
    prekeys = {p["id"]: _h(p["pub"]) for p in bw["prekeys"]}
    pk_id = t["chosen_prekey_id"]
    sessions: dict[str, Session] = {}
    bob_prekeys = {i: _h(inp[f"bob_opk_priv_{i}"]) for i in t["bob_prekey_ids"]}
    msgs = t["messages"]

    for ev in t["events"]:
        # the library also draws its choice of one-time prekey (a public key); we are given the id
        draws = [_h(inp[name]) for name in ev["consumed_inputs"] if name in inp]

        def rng(n: int) -> bytes:
            v = draws.pop(0)
            assert len(v) == n
            return v

        actor, action, idx = ev["actor"], ev["action"], ev["message"]
        if action == "create_device":
            continue  # the library's own key generation; our keys come from the inputs
        m = msgs[idx] if idx is not None else None
        if action == "initiate":
            bundle = PeerBundle(_h(bw["ik"]), bw["spk_id"], _h(bw["spk"]), _h(bw["spk_sig"]), pk_id, prekeys[pk_id])
            # python-x3dh draws the ephemeral key, python-doubleratchet the first ratchet key
            sessions[actor] = initiate(f, ids[actor], bundle, rng)
            wire, is_kex = sessions[actor].encrypt(_h(m["key_material"]))
            assert is_kex and wire == _h(m["wire"]), f"message {idx}"
        elif action == "encrypt":
            wire, is_kex = sessions[actor].encrypt(_h(m["key_material"]))
            assert is_kex == m["is_key_exchange"] and wire == _h(m["wire"]), f"message {idx}"
        elif action == "decrypt":
            wire = _h(m["wire"])
            if m["is_key_exchange"]:
                kex = f.parse_key_exchange(wire)
                s = sessions.get(actor)
                if s is not None and s.same_key_exchange(kex):
                    got = s.decrypt(kex.message, rng)
                else:
                    s, got = accept(
                        f, ids[actor], kex, {t["bob_spk_id"]: _h(inp["bob_spk_priv"])}.get, bob_prekeys.get, rng
                    )
                    sessions[actor] = s
                    del bob_prekeys[kex.pk_id]
            else:
                got = sessions[actor].decrypt(wire, rng)
            assert got == _h(m["key_material"]), f"message {idx}"
        else:
            pytest.fail(f"unknown action {action}")
        assert not draws, f"event {ev['seq']} drew fewer random values than the library"
    assert sorted(bob_prekeys) == t["post_checks"]["bob_prekey_ids_after"]
    # The replay of message 0 is rejected; we recognise it as a duplicate without drawing keys.
    kex = f.parse_key_exchange(_h(msgs[0]["wire"]))
    assert sessions["bob"].same_key_exchange(kex)
    before = sessions["bob"].to_bytes()
    with pytest.raises(DuplicateMessage):
        sessions["bob"].decrypt(kex.message, lambda n: pytest.fail("no key may be drawn"))  # type: ignore[arg-type,return-value]
    assert sessions["bob"].to_bytes() == before
