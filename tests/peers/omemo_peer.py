"""Synchronous test-peer driver around the Syndace OMEMO backends.

The independent implementations python-twomemo 2.1.0 (OMEMO 2, ``urn:xmpp:omemo:2``) and
python-oldmemo 2.1.0 (legacy OMEMO, ``eu.siacs.conversations.axolotl``) are driven here at the level of
sessions: bundles, key exchanges and ratchet messages as raw wire bytes. No XML and no
``omemo.SessionManager`` are involved; the few session rules the SessionManager applies on top of the
backend (key-exchange wrapping until confirmation, passive build vs. reuse of a session for a repeated key
exchange, pre key deletion after a key exchange) are mirrored here.

Everything runs synchronously: each public method runs the backend coroutines with :func:`asyncio.run`.

These peers are test oracles only. Nothing in the engine may import this module.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, TypeVar

import oldmemo.oldmemo as old
import twomemo.twomemo as two
import x3dh
import x3dh.identity_key_pair
import xeddsa
from omemo.message import PlainKeyMaterial
from omemo.session import Initiation, Session
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType

__all__ = [
    "Flavour",
    "InMemoryStorage",
    "PeerDevice",
    "PeerError",
    "WireBundle",
]

Flavour = Literal["omemo2", "legacy"]

_T = TypeVar("_T")

_Backend = two.Twomemo | old.Oldmemo
_Session = two.SessionImpl | old.SessionImpl
_BundleImpl = two.BundleImpl | old.BundleImpl

_DJB_TYPE = 0x05
_LEGACY_KEY_LEN = 33


class PeerError(Exception):
    """Any failure of a peer operation (bad input, unknown session, failed decryption, ...)."""


@dataclass(frozen=True)
class WireBundle:
    """A device bundle with every value exactly as it appears base64-decoded in the XML of its flavour.

    * ``ik``: omemo2 32-byte Ed25519 public key; legacy 33 bytes ``0x05 || X25519 u``.
    * ``spk``: omemo2 32 raw bytes of X25519 u; legacy 33 bytes ``0x05 || u``.
    * ``spk_sig``: 64 bytes as on the wire (legacy: the Ed25519 sign bit of the IK in bit 7 of ``sig[63]``).
    * ``prekeys``: prekey id -> public key (omemo2 32 raw bytes; legacy 33 bytes ``0x05 || u``).
    """

    ik: bytes
    spk_id: int
    spk: bytes
    spk_sig: bytes
    prekeys: dict[int, bytes]


class InMemoryStorage(Storage):
    """A dict-backed :class:`omemo.storage.Storage`. Values are deep-copied in and out."""

    def __init__(self) -> None:
        super().__init__(disable_cache=True)
        self._data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self._data:
            return Just(self._data[key])
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._data[key] = copy.deepcopy(value)

    async def _delete(self, key: str) -> None:
        self._data.pop(key, None)


def _run(coro: Awaitable[_T]) -> _T:
    async def wrapper() -> _T:
        return await coro

    return asyncio.run(wrapper())


def _legacy_key(serialized: bytes, what: str) -> bytes:
    if len(serialized) != _LEGACY_KEY_LEN or serialized[0] != _DJB_TYPE:
        raise PeerError(f"{what}: expected 33 bytes 0x05 || u, got {serialized.hex()}")
    return serialized[1:]


def _raw_key(key: bytes, what: str) -> bytes:
    if len(key) != 32:
        raise PeerError(f"{what}: expected 32 bytes, got {len(key)}")
    return key


class PeerDevice:
    """One OMEMO device of one flavour, backed by python-twomemo or python-oldmemo.

    Args:
        flavour: ``"omemo2"`` or ``"legacy"``.
        bare_jid: Own bare JID (only informational for the backends).
        device_id: Own device id.
        ik_seed: 32-byte Ed25519 seed of the identity key; random when ``None``.
        num_prekeys: Number of one-time prekeys to generate.
        first_prekey_id: Id of the first generated prekey; the others follow consecutively in generation
            order (the order in which the library asked for randomness).
        spk_id: Id of the signed prekey.

    The identity key is stored as a seed, like python-omemo does, so the backend signs its signed prekey
    with ``xeddsa.ed25519_priv_sign`` over the seed-derived scalar (a signature valid for the Ed25519
    public key of the seed, random 64-byte nonce).
    """

    def __init__(
        self,
        flavour: Flavour,
        bare_jid: str,
        device_id: int,
        ik_seed: bytes | None = None,
        *,
        num_prekeys: int = 100,
        first_prekey_id: int = 1,
        spk_id: int = 1,
    ) -> None:
        if flavour not in ("omemo2", "legacy"):
            raise PeerError(f"unknown flavour {flavour!r}")
        if ik_seed is not None and len(ik_seed) != 32:
            raise PeerError("ik_seed must be 32 bytes")
        if num_prekeys < 0 or first_prekey_id < 1 or spk_id < 1:
            raise PeerError("invalid prekey parameters")

        self.flavour: Flavour = flavour
        self.bare_jid = bare_jid
        self.device_id = device_id
        self.ik_seed: bytes = secrets.token_bytes(32) if ik_seed is None else ik_seed
        self._storage = InMemoryStorage()
        self._backend: _Backend = two.Twomemo(self._storage) if flavour == "omemo2" else old.Oldmemo(self._storage)
        # Ed25519 sign bit of remote identity keys learned from their (legacy) bundles. The legacy key
        # exchange carries the IK in Curve25519 form only; python-oldmemo takes the sign bit from the
        # sender's bundle. It does not influence any cryptographic result.
        self._remote_ik_sign: dict[tuple[str, int], bool] = {}
        _run(self._setup(num_prekeys, first_prekey_id, spk_id))

    # ------------------------------------------------------------------ setup

    @property
    def _ns(self) -> str:
        return self._backend.namespace

    async def _setup(self, num_prekeys: int, first_prekey_id: int, spk_id: int) -> None:
        storage = self._storage
        await storage.store("/ikp/is_seed", True)
        await storage.store_bytes("/ikp/key", self.ik_seed)

        state_cls = two.StateImpl if self.flavour == "omemo2" else old.StateImpl
        # Both backends keep the IK in Ed25519 format internally (see Twomemo/Oldmemo.__get_state).
        state: x3dh.BaseState = state_cls.create(
            x3dh.IdentityKeyFormat.ED_25519,
            x3dh.HashFunction.SHA_256,
            state_cls.INFO,
            x3dh.identity_key_pair.IdentityKeyPairSeed(self.ik_seed),
        )
        # Generate the prekeys one at a time so that ids follow the generation order (the backend itself
        # assigns ids in set-iteration order, which depends on the hash seed of the process).
        pre_key_ids: dict[str, int] = {}
        known_privs = state.model.pre_keys
        for index in range(num_prekeys):
            state.generate_pre_keys(1)
            privs = state.model.pre_keys
            (new_priv,) = privs - known_privs
            known_privs = privs
            new_pub = xeddsa.priv_to_curve25519_pub(new_priv)
            pre_key_ids[base64.b64encode(new_pub).decode("ascii")] = first_prekey_id + index

        await storage.store(f"/{self._ns}/x3dh", state.json)
        await storage.store(
            f"/{self._ns}/signed_pre_key_ids",
            {base64.b64encode(state.bundle.signed_pre_key).decode("ascii"): spk_id},
        )
        await storage.store(f"/{self._ns}/pre_key_ids", pre_key_ids)
        await storage.store(f"/{self._ns}/pre_key_id_counter", max(pre_key_ids.values(), default=first_prekey_id - 1))

    # --------------------------------------------------------------- identity

    def identity_key(self) -> bytes:
        """Own identity public key as on the wire (omemo2: Ed25519; legacy: ``0x05 || X25519 u``)."""
        ed_pub = xeddsa.seed_to_ed25519_pub(self.ik_seed)
        if self.flavour == "omemo2":
            return ed_pub
        return bytes([_DJB_TYPE]) + xeddsa.ed25519_pub_to_curve25519_pub(ed_pub)

    def identity_key_ed25519(self) -> bytes:
        """Own identity public key in Ed25519 form (what python-omemo uses internally for both flavours)."""
        return xeddsa.seed_to_ed25519_pub(self.ik_seed)

    # ----------------------------------------------------------------- bundle

    def bundle(self) -> WireBundle:
        """The current bundle (without prekeys that were consumed by incoming key exchanges)."""
        impl = _run(self._backend.get_bundle(self.bare_jid, self.device_id))
        assert isinstance(impl, (two.BundleImpl, old.BundleImpl))
        b = impl.bundle
        ids = impl.pre_key_ids
        if self.flavour == "omemo2":
            return WireBundle(
                ik=b.identity_key,
                spk_id=impl.signed_pre_key_id,
                spk=b.signed_pre_key,
                spk_sig=b.signed_pre_key_sig,
                prekeys={ids[pub]: pub for pub in sorted(b.pre_keys, key=lambda p: ids[p])},
            )
        sig = bytearray(b.signed_pre_key_sig)
        sig[63] |= b.identity_key[31] & 0x80
        djb = bytes([_DJB_TYPE])
        return WireBundle(
            ik=djb + xeddsa.ed25519_pub_to_curve25519_pub(b.identity_key),
            spk_id=impl.signed_pre_key_id,
            spk=djb + b.signed_pre_key,
            spk_sig=bytes(sig),
            prekeys={ids[pub]: djb + pub for pub in sorted(b.pre_keys, key=lambda p: ids[p])},
        )

    def prekey_ids(self) -> list[int]:
        """Ids of the prekeys still present (visible) in the bundle, ascending."""
        return sorted(self.bundle().prekeys)

    def _bundle_impl(self, jid: str, device_id: int, bundle: WireBundle) -> _BundleImpl:
        if len(bundle.spk_sig) != 64:
            raise PeerError("spk_sig must be 64 bytes")
        if self.flavour == "omemo2":
            ik = _raw_key(bundle.ik, "ik")
            spk = _raw_key(bundle.spk, "spk")
            pre_key_ids = {_raw_key(pub, f"pk {pid}"): pid for pid, pub in bundle.prekeys.items()}
            return two.BundleImpl(
                jid,
                device_id,
                x3dh.Bundle(ik, spk, bundle.spk_sig, frozenset(pre_key_ids)),
                bundle.spk_id,
                pre_key_ids,
            )
        sign_bit = bool(bundle.spk_sig[63] >> 7)
        sig = bytearray(bundle.spk_sig)
        sig[63] &= 0x7F
        try:
            ik_ed = xeddsa.curve25519_pub_to_ed25519_pub(_legacy_key(bundle.ik, "ik"), sign_bit)
        except xeddsa.XEdDSAException as e:
            raise PeerError(f"bad identity key: {e}") from e
        spk = _legacy_key(bundle.spk, "spk")
        pre_key_ids = {_legacy_key(pub, f"pk {pid}"): pid for pid, pub in bundle.prekeys.items()}
        self._remote_ik_sign[(jid, device_id)] = sign_bit
        return old.BundleImpl(
            jid,
            device_id,
            x3dh.Bundle(ik_ed, spk, bytes(sig), frozenset(pre_key_ids)),
            bundle.spk_id,
            pre_key_ids,
        )

    # ------------------------------------------------------------- key material

    def _plain(self, key_material: bytes) -> two.PlainKeyMaterialImpl | old.PlainKeyMaterialImpl:
        if self.flavour == "omemo2":
            n = two.PlainKeyMaterialImpl.KEY_LENGTH
            return two.PlainKeyMaterialImpl(key_material[:n], key_material[n:])
        n = old.PlainKeyMaterialImpl.KEY_LENGTH
        return old.PlainKeyMaterialImpl(key_material[:n], key_material[n:])

    def _kex_wire(self, session: _Session, authenticated_message: bytes) -> bytes:
        if isinstance(session, two.SessionImpl):
            return session.key_exchange.serialize(authenticated_message)
        wire, _sign_bit = session.key_exchange.serialize(authenticated_message)
        return wire

    # --------------------------------------------------------------- sessions

    def initiate(
        self,
        jid: str,
        device_id: int,
        bundle: WireBundle,
        key_material: bytes,
        *,
        prekey_id: int | None = None,
    ) -> bytes:
        """Active X3DH from ``bundle``; replaces any session with that device.

        Returns the key-exchange wire bytes (omemo2: serialized ``OMEMOKeyExchange``; legacy:
        ``0x33 || PreKeySignalMessage``) carrying ``key_material``. With ``prekey_id`` the library is
        given a bundle holding only that prekey; otherwise it picks one at random (``secrets.choice``).
        """
        if prekey_id is not None:
            if prekey_id not in bundle.prekeys:
                raise PeerError(f"prekey id {prekey_id} not in bundle")
            bundle = WireBundle(
                bundle.ik, bundle.spk_id, bundle.spk, bundle.spk_sig, {prekey_id: bundle.prekeys[prekey_id]}
            )
        impl = self._bundle_impl(jid, device_id, bundle)
        return _run(self._initiate(jid, device_id, impl, key_material))

    async def _initiate(self, jid: str, device_id: int, impl: _BundleImpl, key_material: bytes) -> bytes:
        backend = self._backend
        try:
            session, encrypted = await backend.build_session_active(jid, device_id, impl, self._plain(key_material))
        except Exception as e:
            raise PeerError(f"active session building failed: {e!r}") from e
        assert isinstance(session, (two.SessionImpl, old.SessionImpl))
        assert isinstance(encrypted, (two.EncryptedKeyMaterialImpl, old.EncryptedKeyMaterialImpl))
        wire = self._kex_wire(session, encrypted.serialize())
        await backend.store_session(session)
        return wire

    def encrypt(self, jid: str, device_id: int, key_material: bytes) -> tuple[bytes, bool]:
        """Encrypt with the existing session; returns ``(wire bytes, is_key_exchange)``.

        While a session this device initiated is unconfirmed (nothing decrypted on it yet), the message is
        wrapped in the same key exchange as the initial one, exactly as python-omemo's SessionManager does.
        """
        return _run(self._encrypt(jid, device_id, key_material))

    async def _encrypt(self, jid: str, device_id: int, key_material: bytes) -> tuple[bytes, bool]:
        backend = self._backend
        session = await backend.load_session(jid, device_id)
        if session is None:
            raise PeerError(f"no session with {jid}/{device_id}")
        encrypted = await backend.encrypt_key_material(session, self._plain(key_material))
        assert isinstance(encrypted, (two.EncryptedKeyMaterialImpl, old.EncryptedKeyMaterialImpl))
        authenticated = encrypted.serialize()
        if session.initiation is Initiation.ACTIVE and not session.confirmed:
            result = (self._kex_wire(session, authenticated), True)
        else:
            result = (authenticated, False)
        await backend.store_session(session)
        return result

    def decrypt(self, jid: str, device_id: int, wire: bytes, is_key_exchange: bool) -> bytes:
        """Decrypt one ``<key>`` worth of wire bytes from ``jid``/``device_id``; returns the key material.

        A key exchange builds a new passive session (replacing any existing one), unless the existing
        session was itself built passively from the same key exchange (same ik, ek, spk id and pk id), in
        which case the embedded message is decrypted with it. After a key exchange the used prekey is
        deleted. State is only persisted after successful decryption. Raises :class:`PeerError`.
        """
        return _run(self._decrypt(jid, device_id, wire, is_key_exchange))

    async def _decrypt(self, jid: str, device_id: int, wire: bytes, is_key_exchange: bool) -> bytes:
        backend = self._backend
        try:
            key_exchange: two.KeyExchangeImpl | old.KeyExchangeImpl | None = None
            authenticated = wire
            if is_key_exchange:
                if isinstance(backend, two.Twomemo):
                    key_exchange, authenticated = two.KeyExchangeImpl.parse(wire)
                else:
                    key_exchange, authenticated = old.KeyExchangeImpl.parse(
                        wire, self._remote_ik_sign.get((jid, device_id), False)
                    )
            encrypted: two.EncryptedKeyMaterialImpl | old.EncryptedKeyMaterialImpl
            if isinstance(backend, two.Twomemo):
                encrypted = two.EncryptedKeyMaterialImpl.parse(authenticated, jid, device_id)
            else:
                encrypted = old.EncryptedKeyMaterialImpl.parse(authenticated, jid, device_id)
        except PeerError:
            raise
        except Exception as e:
            raise PeerError(f"malformed message: {e!r}") from e

        session: Session | None = await backend.load_session(jid, device_id)
        plain: PlainKeyMaterial
        try:
            if key_exchange is None:
                if session is None:
                    raise PeerError(f"no session with {jid}/{device_id} and no key exchange")
                plain = await backend.decrypt_key_material(session, encrypted)
            elif (
                session is not None
                and session.initiation is Initiation.PASSIVE
                and session.key_exchange.builds_same_session(key_exchange)
            ):
                plain = await backend.decrypt_key_material(session, encrypted)
            else:
                session, plain = await backend.build_session_passive(jid, device_id, key_exchange, encrypted)
        except PeerError:
            raise
        except Exception as e:
            raise PeerError(f"decryption failed: {e!r}") from e

        await backend.store_session(session)
        if key_exchange is not None:
            await backend.delete_pre_key(session)
        assert isinstance(plain, (two.PlainKeyMaterialImpl, old.PlainKeyMaterialImpl))
        return plain.key + plain.auth_tag

    # ---------------------------------------------------------- introspection

    def has_session(self, jid: str, device_id: int) -> bool:
        return _run(self._backend.load_session(jid, device_id)) is not None

    def session_confirmed(self, jid: str, device_id: int) -> bool:
        """Whether the session was confirmed (a message was decrypted on it). False if there is none."""
        session = _run(self._backend.load_session(jid, device_id))
        return session is not None and session.confirmed

    def session_initiation(self, jid: str, device_id: int) -> Literal["active", "passive"] | None:
        session = _run(self._backend.load_session(jid, device_id))
        if session is None:
            return None
        return "active" if session.initiation is Initiation.ACTIVE else "passive"
