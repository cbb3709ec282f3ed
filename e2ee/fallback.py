"""The send policy across backends: OMEMO first, OpenPGP as the fallback, clear text only when
explicitly allowed.

For each recipient, separately:

1. OMEMO when at least one of its devices is eligible (active, trusted, with a session or a
   bundle) -- :meth:`~e2ee.engine.Engine.encrypt_omemo` for that recipient and our own devices;
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

from .context import Context, bare
from .errors import NoEligibleDevices, UsageError
from .openpgp.backend import OpenPgp
from .registry import find
from .results import Effect, EncryptResult, FetchBundle, FetchDeviceList, Outcome
from .sending import OmemoSender, SendPlan

__all__ = ["Route", "RecipientResult", "SendResult", "SendPolicy"]


#: How :meth:`SendPolicy.describe_missing` names the OMEMO devices that could not be used.
_MISSING = {
    Outcome.UNDECIDED: "awaiting a trust decision",
    Outcome.DISTRUSTED: "distrusted",
    Outcome.NO_BUNDLE: "without a bundle",
    Outcome.FAILED: "with an unusable bundle",
}


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
        key = bare(jid)
        return next(r.route for r in self.recipients if r.jid == key)


class SendPolicy:
    """The route of each recipient (module docstring) over the OMEMO sender and the OpenPGP
    backend, if any; the OMEMO send plan is computed once per call."""

    def __init__(self, ctx: Context, omemo: OmemoSender, openpgp: OpenPgp | None) -> None:
        self._ctx = ctx
        self._omemo = omemo
        self._openpgp = openpgp

    def prepare(self, recipients: Sequence[str], *, use_omemo: bool = True, use_openpgp: bool = True) -> list[Effect]:
        """The fetches a send to ``recipients`` needs now (nothing is encrypted): OMEMO device
        lists and bundles, and for recipients OMEMO cannot reach (once their OMEMO fetches are
        done) their OpenPGP metadata and keys.  Run them, feed the answers in and call again
        until it returns nothing.  ``use_omemo=False``: OpenPGP only (an OpenPGP-only client);
        ``use_openpgp=False``: OMEMO only (before an OMEMO-only send, e.g. in rooms)."""
        jids = list(dict.fromkeys(bare(j) for j in recipients))

        def op() -> list[Effect]:
            effects: list[Effect] = []
            reachable: set[str] = set()
            if use_omemo:
                plan = self._omemo.plan(self._omemo.recipients(jids))
                effects = list(dict.fromkeys(plan.effects))
                reachable = {j for j in jids if j not in plan.unreachable}
            if use_openpgp and self._openpgp is not None:
                waiting = {e.jid for e in effects if isinstance(e, (FetchDeviceList, FetchBundle))}
                effects += self._openpgp.prepare([j for j in jids if j not in reachable and j not in waiting])
            return effects

        return self._ctx.run(op)

    def describe_missing(self, jid: str, plan: SendPlan | None = None) -> str:
        """The sentence :class:`~e2ee.errors.NoEligibleDevices` carries for ``jid`` (from
        ``plan`` when the caller has one)."""
        jid = bare(jid)
        if plan is None:
            plan = self._ctx.run(lambda: self._omemo.plan([jid]))
        counts = dict.fromkeys(_MISSING.values(), 0)
        refused: list[str] = []
        for o in plan.outcomes:
            if o.jid != jid or o.outcome not in _MISSING:
                continue
            if o.outcome is Outcome.NO_BUNDLE and o.error is not None:
                b = find(o.namespace)
                refused.append(f"device {o.device_id} ({o.namespace if b is None else b.title}): {o.error}")
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

    def encrypt(
        self,
        recipients: Sequence[str],
        body: str | None = None,
        *,
        content: Sequence[ET.Element] = (),
        allow_plaintext: bool = False,
        use_omemo: bool = True,
    ) -> SendResult:
        """Encrypt for each recipient separately by the policy in the module docstring.  Raises
        :class:`~e2ee.errors.NoEligibleDevices` naming what is missing when some recipient can
        be reached no way; nothing is encrypted then.  ``use_omemo=False`` skips OMEMO (an
        OpenPGP-only client).  The OMEMO send plan is computed once for all recipients, and
        the whole send is one transaction."""
        if not recipients:
            raise UsageError("no recipients")
        if body is None and not content:
            raise UsageError("nothing to send")
        jids = list(dict.fromkeys(bare(j) for j in recipients))
        own = self._ctx.own.jid
        return self._ctx.run(lambda: self._encrypt(jids, own, body, content, allow_plaintext, use_omemo))

    def _encrypt(
        self,
        jids: list[str],
        own: str,
        body: str | None,
        content: Sequence[ET.Element],
        allow_plaintext: bool,
        use_omemo: bool,
    ) -> SendResult:
        plan = self._omemo.plan(self._omemo.recipients(jids)) if use_omemo else None
        routes: dict[str, Route] = {}
        missing: dict[str, str] = {}
        for jid in jids:
            if plan is not None and jid not in plan.unreachable:
                routes[jid] = Route.OMEMO
            elif self._openpgp is not None and self._openpgp.can_encrypt_to(jid):
                routes[jid] = Route.OPENPGP
            elif allow_plaintext:
                routes[jid] = Route.PLAINTEXT
            else:
                missing[jid] = self.describe_missing(jid, plan)
        if missing:
            raise NoEligibleDevices(missing)
        out = []
        for jid in jids:
            route = routes[jid]
            if route is Route.OMEMO:
                assert plan is not None
                result = self._omemo.encrypt_planned(plan.only([jid, own]), body, content, jid)
                out.append(RecipientResult(jid, route, omemo=result))
            elif route is Route.OPENPGP:
                assert self._openpgp is not None
                message = self._openpgp.encrypt([jid], body, content=content)
                fprs = tuple(dict.fromkeys(f for fs in message.fingerprints.values() for f in fs))
                out.append(RecipientResult(jid, route, openpgp=message.element, fingerprints=fprs))
            else:
                out.append(RecipientResult(jid, route))
        return SendResult(tuple(out))
