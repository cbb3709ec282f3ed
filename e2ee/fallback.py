"""The send policy across backends: OMEMO first, OpenPGP as the fallback, clear text only when
explicitly allowed.

For each recipient, separately:

1. OMEMO when at least one of its devices is eligible (active, trusted, with a session or a
   bundle) -- :meth:`~e2ee.sending.Sending.encrypt` for that recipient and our own devices;
2. else OpenPGP when it announced a key we fetched and trust (and this device has a key) --
   :meth:`~e2ee.openpgp.backend.OpenPgp.encrypt`, to its keys and ours;
3. else clear text, only with ``allow_plaintext=True``;
4. else :class:`~e2ee.errors.NoEligibleDevices` naming what is missing, and nothing is encrypted
   for anybody (the decision is made for every recipient before anything is encrypted).

Trust for both backends is in the same store (:mod:`e2ee.trust`), so a contact whose OMEMO key
was verified does not silently fall back to an unverified OpenPGP key (it stays undecided).
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .core import _bare
from .errors import NoEligibleDevices, UsageError
from .openpgp.backend import OpenPgp
from .openpgp.crypto import OpenPgpCrypto
from .openpgp.xml import NS as OX_NS
from .receiving import Receiving
from .results import DecryptResult, Effect, EncryptResult, FetchBundle, FetchDeviceList, Outcome
from .sending import Sending

__all__ = ["Route", "RecipientResult", "SendResult", "Fallback"]


#: How :meth:`Fallback.describe_missing` names the OMEMO devices that could not be used.
_MISSING = {
    Outcome.UNDECIDED: "awaiting a trust decision",
    Outcome.DISTRUSTED: "distrusted",
    Outcome.NO_BUNDLE: "without a bundle",
    Outcome.FAILED: "with an unusable bundle",
}

#: Namespaces as the sentence names them.
_NS_NAME = {"urn:xmpp:omemo:2": "OMEMO 2", "eu.siacs.conversations.axolotl": "legacy OMEMO"}


class Route(enum.Enum):
    """How a message reaches one recipient."""

    OMEMO = "omemo"
    OPENPGP = "openpgp"
    PLAINTEXT = "plaintext"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What to send to one recipient: the OMEMO result (one element per namespace), or one
    ``<openpgp/>`` element and the fingerprints it was encrypted to, or nothing (clear text)."""

    jid: str
    route: Route
    omemo: EncryptResult | None = None
    openpgp: ET.Element | None = field(default=None, repr=False)
    fingerprints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SendResult:
    """One :class:`RecipientResult` per recipient, in the order given."""

    recipients: tuple[RecipientResult, ...]

    def route(self, jid: str) -> Route:
        bare = _bare(jid)
        return next(r.route for r in self.recipients if r.jid == bare)


class Fallback(Sending, Receiving):
    """The policy methods of :class:`~e2ee.engine.Engine` and its OpenPGP backend."""

    _openpgp: OpenPgp | None = None

    def _init_openpgp(self, crypto: OpenPgpCrypto | None) -> None:
        self._openpgp = None if crypto is None else OpenPgp(self, crypto)

    @property
    def has_openpgp(self) -> bool:
        """Whether an OpenPGP implementation was given (``Engine(..., openpgp=...)``)."""
        return self._openpgp is not None

    @property
    def openpgp(self) -> OpenPgp:
        """The OpenPGP for XMPP backend; :class:`~e2ee.errors.UsageError` without one."""
        if self._openpgp is None:
            raise UsageError("OpenPGP is not set up: create the engine with openpgp=<an OpenPgpCrypto>")
        return self._openpgp

    def _omemo_reachable(self, jids: list[str]) -> set[str]:
        own = self.jid
        plan_jids = list(dict.fromkeys([*jids, own]))
        _plans, _outcomes, _effects, unreachable = self._run(lambda: self._plan(plan_jids, self._now().timestamp()))
        return {j for j in jids if j not in unreachable}

    def decrypt_any(
        self, element: ET.Element, sender: str, *, to: str | None = None, timestamp: datetime | None = None
    ) -> DecryptResult:
        """Decrypt a received element of any backend, chosen by its namespace: OMEMO
        ``<encrypted/>`` (:meth:`~e2ee.receiving.Receiving.decrypt`) or OpenPGP ``<openpgp/>``
        (:meth:`~e2ee.openpgp.backend.OpenPgp.decrypt`); same arguments and errors."""
        if element.tag == f"{{{OX_NS}}}openpgp":
            return self.openpgp.decrypt(element, sender, to=to, timestamp=timestamp)
        return self.decrypt(element, sender, to=to, timestamp=timestamp)

    def prepare_with_fallback(self, recipients: Sequence[str], *, use_omemo: bool = True) -> list[Effect]:
        """The fetches :meth:`encrypt_with_fallback` needs now: OMEMO device lists and bundles,
        and for recipients that OMEMO cannot reach (and whose OMEMO fetches are done) their
        OpenPGP metadata and keys.  Run them and call again until it returns nothing.
        ``use_omemo=False``: OpenPGP only (an OpenPGP-only client)."""
        jids = list(dict.fromkeys(_bare(j) for j in recipients))
        effects = self.prepare(jids) if use_omemo else []
        if self._openpgp is not None:
            waiting = {e.jid for e in effects if isinstance(e, (FetchDeviceList, FetchBundle))}
            reachable = self._omemo_reachable(jids) if use_omemo else set()
            effects += self._openpgp.prepare([j for j in jids if j not in reachable and j not in waiting])
        return effects

    def describe_missing(self, jid: str) -> str:
        """The sentence :class:`~e2ee.errors.NoEligibleDevices` carries for ``jid``."""
        jid = _bare(jid)
        _plans, outcomes, _effects, _unreachable = self._run(lambda: self._plan([jid], self._now().timestamp()))
        counts = dict.fromkeys(_MISSING.values(), 0)
        refused: list[str] = []
        for o in outcomes:
            if o.jid != jid or o.outcome not in _MISSING:
                continue
            if o.outcome is Outcome.NO_BUNDLE and o.error is not None:
                refused.append(f"device {o.device_id} ({_NS_NAME.get(o.namespace, o.namespace)}): {o.error}")
            else:
                counts[_MISSING[o.outcome]] += 1
        parts = [f"{n} {what}" for what, n in counts.items() if n]
        if refused:
            parts.append(f"{len(refused)} whose bundle we refused: " + "; ".join(refused))
        omemo = "its OMEMO devices: " + ", ".join(parts) if parts else "no OMEMO device"
        if self._openpgp is None:
            pgp = "OpenPGP is not set up"
        else:
            pgp = self._openpgp.describe_missing(jid)
        return f"{jid} has no trusted OMEMO device and no trusted OpenPGP key ({omemo}; {pgp})"

    def encrypt_with_fallback(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        allow_plaintext: bool = False,
        use_omemo: bool = True,
    ) -> SendResult:
        """Encrypt for each recipient by the policy in the module docstring.  Raises
        :class:`~e2ee.errors.NoEligibleDevices` when some recipient can be reached neither way
        and ``allow_plaintext`` is false; nothing is encrypted then.  ``use_omemo=False`` skips
        step 1 (an OpenPGP-only client)."""
        if not recipients:
            raise UsageError("no recipients")
        if body is None and not content:
            raise UsageError("nothing to send")
        jids = list(dict.fromkeys(_bare(j) for j in recipients))
        reachable = self._omemo_reachable(jids) if use_omemo else set()
        routes: dict[str, Route] = {}
        missing: dict[str, str] = {}
        for jid in jids:
            if jid in reachable:
                routes[jid] = Route.OMEMO
            elif self._openpgp is not None and self._openpgp.can_encrypt_to(jid):
                routes[jid] = Route.OPENPGP
            elif allow_plaintext:
                routes[jid] = Route.PLAINTEXT
            else:
                missing[jid] = self.describe_missing(jid)
        if missing:
            raise NoEligibleDevices(missing)
        out = []
        for jid in jids:
            route = routes[jid]
            if route is Route.OMEMO:
                out.append(RecipientResult(jid, route, omemo=self.encrypt([jid], body, content=content)))
            elif route is Route.OPENPGP:
                message = self.openpgp.encrypt([jid], body, content=content)
                fprs = tuple(dict.fromkeys(f for fs in message.fingerprints.values() for f in fs))
                out.append(RecipientResult(jid, route, openpgp=message.element, fingerprints=fprs))
            else:
                out.append(RecipientResult(jid, route))
        return SendResult(tuple(out))
