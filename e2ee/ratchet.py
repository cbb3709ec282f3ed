"""The Double Ratchet (Signal, Revision 1), one implementation for both OMEMO versions.

Per-flavour differences (info strings, MAC length, framing, associated data) come from the
:class:`~e2ee.flavour.Flavour`.  Properties the rest of the engine relies on:

* **Atomic decryption.**  :meth:`DoubleRatchet.decrypt` computes everything in local
  variables and assigns to the object only after the MAC verified and the ciphertext
  decrypted.  Any failure leaves the state, and so :meth:`~DoubleRatchet.to_bytes`,
  unchanged.
* **Bounded work.**  The number of keys a message would make us skip is checked against
  :data:`~e2ee.limits.MAX_SKIP` before any key is derived; skipped keys are capped per session
  with FIFO eviction; lookups are O(1), so a decrypt does not get slower with the number of
  skipped keys held.
* **MAC over received bytes.**  The MAC is checked over the bytes as they arrived, never over
  a re-serialization.
* **``pn`` from both families.**  We send ``pn`` as the Signal specification defines it (the
  length of the previous sending chain).  libsignal senders put one less, so on a new ratchet
  key we also keep the key at index ``pn`` of the old chain -- not among the skipped keys but as
  the single *spare* key, replaced at the next DH step, so that spec senders (for whom it is
  never used) do not make the skipped-key store grow.
"""

from __future__ import annotations

from typing import Final, Protocol

from . import records
from .errors import (
    AuthenticationFailed,
    CorruptState,
    DuplicateMessage,
    TooManySkippedKeys,
    UsageError,
)
from .flavour import Flavour, ParsedMessage
from .limits import MAX_CHAIN_COUNTER, MAX_OLD_CHAINS, MAX_SKIP, MAX_SKIPPED_KEYS_PER_SESSION
from .primitives import (
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    constant_time_eq,
    hkdf_sha256,
    hmac_sha256,
    x25519,
    x25519_public,
)
from .rng import Random, system_random
from .wire.state_pb2 import RatchetState

__all__ = ["DoubleRatchet", "MemorySkippedKeys", "SkippedKeys", "STATE_VERSION"]

#: Version byte in front of serialized ratchet state.
STATE_VERSION: Final = 1

_MK_CONST: Final = b"\x01"
_CK_CONST: Final = b"\x02"
_ZERO_SALT: Final = bytes(32)


#: (ratchet key, counter) of a skipped message key
SkipIndex = tuple[bytes, int]


class SkippedKeys(Protocol):
    """Where a ratchet keeps the message keys it skipped.  The ratchet calls :meth:`pop` and
    :meth:`add` only after a message authenticated, so a failed decryption changes nothing."""

    def get(self, index: SkipIndex) -> bytes | None: ...

    def pop(self, index: SkipIndex) -> None:
        """Forget a key that has just been used."""

    def add(self, keys: list[tuple[SkipIndex, bytes]]) -> None:
        """Store new keys (in chain order), evicting the oldest beyond
        :data:`~e2ee.limits.MAX_SKIPPED_KEYS_PER_SESSION`."""

    def __len__(self) -> int: ...


class MemorySkippedKeys(dict[SkipIndex, bytes]):
    """Skipped keys held in the ratchet object itself and serialized with it (oldest first)."""

    def pop(self, index: SkipIndex, default: object = None) -> None:  # type: ignore[override]
        super().pop(index, None)

    def add(self, keys: list[tuple[SkipIndex, bytes]]) -> None:
        self.update(keys)
        excess = len(self) - MAX_SKIPPED_KEYS_PER_SESSION
        if excess > 0:
            it = iter(self)
            for index in [next(it) for _ in range(excess)]:
                del self[index]


def _flavours() -> dict[int, Flavour]:
    from .legacy.wire import LEGACY
    from .omemo2.wire import OMEMO2

    return {OMEMO2.code: OMEMO2, LEGACY.code: LEGACY}


class DoubleRatchet:
    """Ratchet state of one session with one peer device.

    Build with :meth:`initiate` (after active X3DH) or :meth:`respond` (after passive X3DH),
    or :meth:`from_bytes`.
    """

    __slots__ = (
        "flavour",
        "root_key",
        "dhs_priv",
        "dhs_pub",
        "dhr",
        "cks",
        "ckr",
        "ns",
        "nr",
        "pn",
        "ad_send",
        "ad_recv",
        "skipped",
        "old_chains",
        "spare",
    )

    def __init__(
        self,
        flavour: Flavour,
        root_key: bytes,
        dhs_priv: bytes,
        dhs_pub: bytes,
        dhr: bytes | None,
        cks: bytes | None,
        ckr: bytes | None,
        ns: int,
        nr: int,
        pn: int,
        ad_send: bytes,
        ad_recv: bytes,
        skipped: SkippedKeys | None = None,
        old_chains: dict[bytes, int] | None = None,
        spare: tuple[bytes, int, bytes] | None = None,
    ) -> None:
        self.flavour = flavour
        self.root_key = root_key
        self.dhs_priv = dhs_priv
        self.dhs_pub = dhs_pub
        self.dhr = dhr
        self.cks = cks
        self.ckr = ckr
        self.ns = ns
        self.nr = nr
        self.pn = pn
        self.ad_send = ad_send
        self.ad_recv = ad_recv
        #: (ratchet key, counter) -> message key, oldest first
        self.skipped: SkippedKeys = skipped if skipped is not None else MemorySkippedKeys()
        #: previous receiving ratchet key -> first counter that was never derived on it
        self.old_chains: dict[bytes, int] = old_chains if old_chains is not None else {}
        #: (ratchet key, counter, message key) at index ``pn`` of the last chain we left
        self.spare = spare

    def __repr__(self) -> str:
        return f"<DoubleRatchet {self.flavour.name} ns={self.ns} nr={self.nr} pn={self.pn} skipped={len(self.skipped)}>"

    # ------------------------------------------------------------------ construction

    @classmethod
    def initiate(
        cls,
        flavour: Flavour,
        shared_secret: bytes,
        ad_send: bytes,
        ad_recv: bytes,
        peer_spk: bytes,
        rng: Random = system_random,
    ) -> DoubleRatchet:
        """Alice's side: our first ratchet key pair is fresh, the peer's is its signed prekey
        (raw X25519, already checked)."""
        priv = rng(32)
        rk, cks = _kdf_rk(flavour, shared_secret, x25519(priv, peer_spk))
        return cls(flavour, rk, priv, x25519_public(priv), peer_spk, cks, None, 0, 0, 0, ad_send, ad_recv)

    @classmethod
    def respond(
        cls,
        flavour: Flavour,
        shared_secret: bytes,
        ad_send: bytes,
        ad_recv: bytes,
        spk_private: bytes,
    ) -> DoubleRatchet:
        """Bob's side: the signed prekey is our first ratchet key pair; we can send only after
        the first message arrived."""
        return cls(
            flavour,
            shared_secret,
            spk_private,
            x25519_public(spk_private),
            None,
            None,
            None,
            0,
            0,
            0,
            ad_send,
            ad_recv,
        )

    # ------------------------------------------------------------------ sending

    @property
    def can_send(self) -> bool:
        return self.cks is not None

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt one message; the state advances (persist it before the bytes leave)."""
        cks = self.cks
        if cks is None:
            raise UsageError("this session cannot send before it has received a message")
        if self.ns > MAX_CHAIN_COUNTER:
            raise UsageError("sending chain exhausted; a new session is needed")
        mk = hmac_sha256(cks, _MK_CONST)
        okm = hkdf_sha256(mk, _ZERO_SALT, self.flavour.message_key_info, 80)
        ciphertext = aes_cbc_encrypt(okm[:32], okm[64:], plaintext)
        data = self.flavour.pack_message(self.dhs_pub, self.ns, self.pn, ciphertext, okm[32:64], self.ad_send)
        self.cks = hmac_sha256(cks, _CK_CONST)
        self.ns += 1
        return data

    # ------------------------------------------------------------------ receiving

    def decrypt(self, data: bytes, rng: Random = system_random) -> bytes:
        """Decrypt one received ratchet message.  ``rng`` supplies our next ratchet key pair
        when the message starts a new peer chain.  On any error the state is unchanged."""
        return self.decrypt_parsed(self.flavour.parse_message(data), rng)

    def decrypt_parsed(self, msg: ParsedMessage, rng: Random = system_random) -> bytes:
        """Like :meth:`decrypt`, for a message already split by the flavour's parser."""
        dh = msg.dh_pub
        n = msg.n
        skipped = self.skipped
        mk = skipped.get((dh, n)) if len(skipped) else None
        if mk is not None:
            plaintext = self._open(mk, msg)
            skipped.pop((dh, n))
            return plaintext
        spare = self.spare
        if spare is not None and spare[1] == n and spare[0] == dh:
            plaintext = self._open(spare[2], msg)
            self.spare = None
            return plaintext

        if dh == self.dhr:
            nr = self.nr
            if n < nr:
                raise DuplicateMessage("message key already used or evicted")
            if n - nr > MAX_SKIP:
                raise TooManySkippedKeys(f"message {n} is {n - nr} ahead of the chain")
            ck = self.ckr
            if ck is None:  # our initial DHr (the peer's signed prekey) has no receiving chain
                raise AuthenticationFailed()
            new_keys: list[tuple[tuple[bytes, int], bytes]] = []
            ck = _skip(ck, dh, nr, n, new_keys)
            plaintext = self._open(hmac_sha256(ck, _MK_CONST), msg)
            self.ckr = hmac_sha256(ck, _CK_CONST)
            self.nr = n + 1
            if new_keys:
                skipped.add(new_keys)
            return plaintext

        end = self.old_chains.get(dh)
        if end is not None:
            # A chain we already left: everything below `end` was used or stored as skipped.
            if n < end:
                raise DuplicateMessage("message key already used or evicted")
            raise AuthenticationFailed()

        # A new ratchet key: skip on the old receiving chain, DH-ratchet, skip on the new one.
        old_ck = self.ckr
        old_dh = self.dhr
        nr = self.nr
        old_count = max(0, msg.pn - nr) if old_ck is not None else 0
        if old_count + n > MAX_SKIP:
            raise TooManySkippedKeys(f"message would skip {old_count + n} keys")
        new_keys = []
        # up to and including index pn: libsignal senders put pn one lower than the spec; the key
        # at index pn becomes the spare
        old_end = max(nr, msg.pn + 1)
        new_spare = None
        if old_ck is not None and old_dh is not None:
            ck_pn = _skip(old_ck, old_dh, nr, msg.pn, new_keys)
            if msg.pn >= nr:
                new_spare = (old_dh, msg.pn, hmac_sha256(ck_pn, _MK_CONST))
        flavour = self.flavour
        rk, ckr = _kdf_rk(flavour, self.root_key, x25519(self.dhs_priv, dh))
        new_priv = rng(32)
        rk, cks = _kdf_rk(flavour, rk, x25519(new_priv, dh))
        ckr = _skip(ckr, dh, 0, n, new_keys)
        plaintext = self._open(hmac_sha256(ckr, _MK_CONST), msg)
        # commit
        if old_dh is not None and old_ck is not None:
            chains = self.old_chains
            chains[old_dh] = old_end
            while len(chains) > MAX_OLD_CHAINS:
                del chains[next(iter(chains))]
        self.spare = new_spare
        self.root_key = rk
        self.dhs_priv = new_priv
        self.dhs_pub = x25519_public(new_priv)
        self.dhr = dh
        self.cks = cks
        self.ckr = hmac_sha256(ckr, _CK_CONST)
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        if new_keys:
            skipped.add(new_keys)
        return plaintext

    def _open(self, mk: bytes, msg: ParsedMessage) -> bytes:
        flavour = self.flavour
        okm = hkdf_sha256(mk, _ZERO_SALT, flavour.message_key_info, 80)
        mac = hmac_sha256(okm[32:64], self.ad_recv + msg.mac_data)[: flavour.mac_len]
        if not constant_time_eq(mac, msg.mac):
            raise AuthenticationFailed()
        return aes_cbc_decrypt(okm[:32], okm[64:], msg.ciphertext)

    # ------------------------------------------------------------------ serialization

    def to_bytes(self) -> bytes:
        """Versioned serialization: one version byte, then a ``RatchetState`` protobuf."""
        st = RatchetState(
            flavour=self.flavour.code,
            root_key=self.root_key,
            dhs_priv=self.dhs_priv,
            dhs_pub=self.dhs_pub,
            ns=self.ns,
            nr=self.nr,
            pn=self.pn,
            ad_send=self.ad_send,
            ad_recv=self.ad_recv,
        )
        if self.dhr is not None:
            st.dhr = self.dhr
        if self.cks is not None:
            st.cks = self.cks
        if self.ckr is not None:
            st.ckr = self.ckr
        skipped = self.skipped
        # skipped keys held elsewhere (a store) are persisted by their owner
        for (dh, n), key in skipped.items() if isinstance(skipped, MemorySkippedKeys) else ():
            sk = st.skipped.add()
            sk.dh_pub = dh
            sk.n = n
            sk.key = key
        for dh, end in self.old_chains.items():
            oc = st.old_chains.add()
            oc.dh_pub = dh
            oc.end = end
        if self.spare is not None:
            st.spare.dh_pub, st.spare.n, st.spare.key = self.spare
        return records.dump(STATE_VERSION, st)

    @classmethod
    def from_bytes(cls, data: bytes, skipped: SkippedKeys | None = None) -> DoubleRatchet:
        """Inverse of :meth:`to_bytes`; raises :class:`~e2ee.errors.CorruptState`.  Pass
        ``skipped`` when the skipped keys live outside the serialized state."""
        st = records.load(data, STATE_VERSION, RatchetState(), "ratchet state")
        flavour = _flavours().get(st.flavour)
        if flavour is None:
            raise CorruptState("unknown flavour in ratchet state")
        keys32 = [st.root_key, st.dhs_priv, st.dhs_pub]
        keys32 += [getattr(st, f) for f in ("dhr", "cks", "ckr") if st.HasField(f)]
        keys32 += [s.dh_pub for s in st.skipped] + [s.key for s in st.skipped]
        keys32 += [c.dh_pub for c in st.old_chains]
        if st.HasField("spare"):
            keys32 += [st.spare.dh_pub, st.spare.key]
        if any(len(k) != 32 for k in keys32):
            raise CorruptState("ratchet state holds a key of wrong length")
        return cls(
            flavour,
            st.root_key,
            st.dhs_priv,
            st.dhs_pub,
            st.dhr if st.HasField("dhr") else None,
            st.cks if st.HasField("cks") else None,
            st.ckr if st.HasField("ckr") else None,
            st.ns,
            st.nr,
            st.pn,
            st.ad_send,
            st.ad_recv,
            skipped if skipped is not None else MemorySkippedKeys(((s.dh_pub, s.n), s.key) for s in st.skipped),
            {c.dh_pub: c.end for c in st.old_chains},
            (st.spare.dh_pub, st.spare.n, st.spare.key) if st.HasField("spare") else None,
        )


def _skip(ck: bytes, dh: bytes, start: int, stop: int, out: list[tuple[tuple[bytes, int], bytes]]) -> bytes:
    """Derive the message keys ``start .. stop - 1`` of the chain ``ck`` of ratchet key ``dh``
    into ``out``; return the chain key at ``stop``."""
    for i in range(start, stop):
        out.append(((dh, i), hmac_sha256(ck, _MK_CONST)))
        ck = hmac_sha256(ck, _CK_CONST)
    return ck


def _kdf_rk(flavour: Flavour, root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = hkdf_sha256(dh_out, root_key, flavour.root_info, 64)
    return out[:32], out[32:]
