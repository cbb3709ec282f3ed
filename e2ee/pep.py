"""What this device publishes (device lists, bundles) and what it takes in from PEP (device
lists and bundles of any account), over the shared :class:`~e2ee.context.Context`."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from . import registry
from .backend import OPEN_ACCESS, OmemoBackend
from .context import Context, bare
from .errors import PeerError
from .limits import MAX_XML_DEPTH, MAX_XML_ELEMENTS
from .model import DeviceList
from .nodes import LIST_ITEM_ID
from .registry import BACKENDS
from .results import Effect, Publish
from .xmlsafe import check_element

__all__ = ["Pep", "device_list_effect", "bundle_effects", "parse_device_list"]

_MAX_REFUSED = 4096  # refusal sentences kept, whatever a server sends


def parse_device_list(namespace: str, element: ET.Element) -> DeviceList:
    """A device-list item payload of either namespace (for :meth:`Engine.create`); raises
    :class:`~e2ee.errors.MalformedMessage`."""
    check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
    return registry.backend(namespace).parse_device_list(element)


def device_list_effect(ctx: Context, backend: OmemoBackend) -> Publish:
    """Our device list of ``backend``'s namespace: the account's other devices and ours."""
    own = ctx.own
    current = ctx.devices.lists(own.jid).get(backend.flavour.name)
    others = [d for d in current.devices if d.device_id != own.device_id] if current else []
    entries = (*others, backend.own_entry(own.identity, own.device_id, own.label))
    dl = DeviceList(backend.flavour.name, entries)
    ctx.devices.set_list(own.jid, dl)
    return Publish(backend.device_list_node, LIST_ITEM_ID, backend.build_device_list(dl), (OPEN_ACCESS,))


def bundle_effects(ctx: Context) -> list[Effect]:
    """Our bundle in every namespace."""
    own = ctx.own
    dev = own.device_id
    bundles = own.bundles(tuple(b.flavour for b in BACKENDS))
    return [
        Publish(b.bundle_node(dev), b.bundle_publish_item(dev), b.build_bundle(bundle), b.bundle_publish_options)
        for b, bundle in zip(BACKENDS, bundles, strict=True)
    ]


class Pep:
    """Publishing and PEP input (see :class:`~e2ee.engine.Engine` for the documentation)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def publish(self) -> list[Effect]:
        """Everything to announce this device: every namespace's device list (ours added to
        what the account lists) and bundle.  Rotates the signed prekey first when it is due."""
        ctx = self._ctx

        def op() -> list[Effect]:
            ctx.own.rotate_signed_prekey(ctx.now())
            ctx.own.refill_prekeys()
            return [*(device_list_effect(ctx, b) for b in BACKENDS), *bundle_effects(ctx)]

        return ctx.run(op)

    def maintenance(self) -> list[Effect]:
        """Periodic upkeep (call e.g. daily and at connect): signed-prekey rotation, dropping a
        previous signed prekey whose grace period ended, prekey refill.  Returns the bundle
        publications needed, if any."""
        ctx = self._ctx

        def op() -> list[Effect]:
            changed = ctx.own.rotate_signed_prekey(ctx.now())
            changed = ctx.own.refill_prekeys() or changed
            return bundle_effects(ctx) if changed else []

        return ctx.run(op)

    def on_device_list(self, jid: str, namespace: str, element: ET.Element | None) -> list[Effect]:
        """A device list arrived (PEP push or fetch result) for the bare JID the event came
        from (the embedder must take it from the stanza's ``from``; no ``from`` means our own
        account).  ``element`` is the item's payload, or None when the node or item does not
        exist.  Returns a republication when our own list lacks this device."""
        ctx = self._ctx
        be = registry.backend(namespace)
        jid = bare(jid)
        if element is None:
            dl = DeviceList(be.flavour.name, ())
        else:
            check_element(element, MAX_XML_DEPTH, MAX_XML_ELEMENTS)
            dl = be.parse_device_list(element)

        def op() -> list[Effect]:
            ctx.devices.set_list(jid, dl)
            if jid == ctx.own.jid and ctx.own.device_id not in dl.ids:
                return [device_list_effect(ctx, be)]
            return []

        return ctx.run(op)

    def on_bundle(self, jid: str, device_id: int, namespace: str, element: ET.Element) -> list[Effect]:
        """A bundle arrived.  It is checked (structure, keys, signed-prekey signature) and kept
        for the next send.  Raises :class:`~e2ee.errors.InvalidBundle`,
        :class:`~e2ee.errors.InvalidKey` or :class:`~e2ee.errors.InvalidSignature`; nothing is
        stored then."""
        ctx = self._ctx
        be = registry.backend(namespace)
        jid = bare(jid)
        flavour = be.flavour
        where = (jid, device_id, namespace)
        try:
            bundle = be.parse_bundle(element)
            ik = flavour.identity_to_x25519(bundle.ik)  # a bad key is InvalidKey, whatever the signature
            spk = flavour.decode_public(bundle.spk)
            for pk in bundle.prekeys.values():
                flavour.decode_public(pk)
            flavour.verify_prekey(bundle.ik, spk, bundle.spk_signature)
        except PeerError as e:
            if len(ctx.refused) >= _MAX_REFUSED:
                ctx.refused.clear()
            ctx.refused[where] = str(e) or type(e).__name__
            raise
        ctx.refused.pop(where, None)

        def op() -> list[Effect]:
            known = ctx.devices.identity(jid, device_id)
            ctx.trust.first_sight(jid, ik, replaces_known_key=known is not None and known != ik)
            ctx.devices.set_bundle(jid, device_id, bundle, ctx.now().timestamp())
            return []

        return ctx.run(op)
