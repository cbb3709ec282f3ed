"""client/publish.py without a server, for the paths neither test server takes (a server that
refuses ``max_items=max`` in a node configuration, a race that never ends, an unrelated
error).  The pubsub side is a small recorder that answers with real slixmpp error stanzas;
the paths both servers do take are shown over them in tests/test_server_publish.py."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.stanza import Iq

import e2ee.client.publish
from e2ee.client.publish import MAX_ITEMS_FALLBACK, RACE_RETRIES, Publisher
from e2ee.results import Publish

NODE = "urn:xmpp:omemo:2:bundles"
EFFECT = Publish(
    NODE, "1", ET.Element("{urn:xmpp:omemo:2}bundle"), (("pubsub#max_items", "max"), ("pubsub#access_model", "open"))
)


def _error(condition: str, kind: str = "cancel", text: str = "") -> IqError:
    iq = Iq()
    iq["type"] = "error"
    iq["error"]["condition"] = condition
    iq["error"]["type"] = kind
    if text:
        iq["error"]["text"] = text
    return IqError(iq)


class Pubsub:
    """Records calls; ``answers`` gives, per call kind, the errors to raise in turn."""

    def __init__(self, **answers: list[IqError | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, kind: str) -> None:
        queue = self.answers.get(kind, [])
        if queue:
            error = queue.pop(0)
            if error is not None:
                raise error

    async def publish(self, jid: str, node: str, *, id: str, payload: ET.Element, options: Any = None) -> None:
        self.calls.append(("publish", options))
        self._answer("publish")

    async def set_node_config(self, jid: str, node: str, config: Any) -> None:
        self.calls.append(("configure", config))
        self._answer("configure")


def _form(options: tuple[tuple[str, str], ...], form_type: str) -> tuple[str, dict[str, str]]:
    return form_type.rsplit("#", 1)[1], dict(options)


def _publisher(pubsub: Pubsub) -> Publisher:
    return Publisher(pubsub, lambda: "me@example.org", _form)


@pytest.fixture(autouse=True)
def _fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2ee.client.publish, "_said", set())
    monkeypatch.setattr(e2ee.client.publish, "_RACE_BACKOFF", 0.0)


def test_refused_options_configure_the_node_first_then_publish_without_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="e2ee.client.publish")
    unknown = _error("resource-constraint", "wait", "Unknown field 'pubsub#max_items' of type '...#publish-options'")
    pubsub = Pubsub(publish=[unknown])
    publisher = _publisher(pubsub)
    asyncio.run(publisher.publish(EFFECT))
    assert pubsub.calls == [
        ("publish", ("publish-options", dict(EFFECT.options))),
        ("configure", ("node_config", dict(EFFECT.options))),
        ("publish", None),
    ]
    assert publisher.options_refused
    # the next publication to the node goes straight in; nothing more is said
    pubsub.calls.clear()
    asyncio.run(publisher.publish(EFFECT))
    assert pubsub.calls == [("publish", None)]
    said = [r.getMessage() for r in caplog.records if "refused our publish-options" in r.getMessage()]
    assert len(said) == 1 and 'resource-constraint ("Unknown field' in said[0]


def test_a_missing_node_is_created_by_publishing_then_configured() -> None:
    pubsub = Pubsub(publish=[_error("not-acceptable", "modify")], configure=[_error("item-not-found")])
    asyncio.run(_publisher(pubsub).publish(EFFECT))
    assert [kind for kind, _ in pubsub.calls] == ["publish", "configure", "publish", "configure"]
    assert pubsub.calls[2] == ("publish", None)


def test_a_refused_max_falls_back_to_a_number(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="e2ee.client.publish")
    pubsub = Pubsub(publish=[_error("conflict")], configure=[_error("not-acceptable", "modify")])
    publisher = _publisher(pubsub)
    asyncio.run(publisher.publish(EFFECT))
    configs = [options for kind, options in pubsub.calls if kind == "configure"]
    assert [c[1]["pubsub#max_items"] for c in configs] == ["max", MAX_ITEMS_FALLBACK]
    assert publisher.max_refused and not publisher.options_refused  # conflict: the node's settings, not the options
    assert any("pubsub#max_items=max" in r.getMessage() for r in caplog.records)


def test_races_are_retried_a_bounded_number_of_times() -> None:
    race = _error("item-not-found", "cancel")
    pubsub = Pubsub(publish=[race, _error("internal-server-error", "wait", "Database failure"), None])
    asyncio.run(_publisher(pubsub).publish(EFFECT))
    assert [kind for kind, _ in pubsub.calls] == ["publish"] * 3
    endless = Pubsub(publish=[race] * (RACE_RETRIES + 5))
    with pytest.raises(IqError):
        asyncio.run(_publisher(endless).publish(EFFECT))
    assert len(endless.calls) == RACE_RETRIES + 1


def test_other_errors_are_not_papered_over() -> None:
    pubsub = Pubsub(publish=[_error("forbidden", "auth")])
    with pytest.raises(IqError):
        asyncio.run(_publisher(pubsub).publish(EFFECT))
    assert len(pubsub.calls) == 1
