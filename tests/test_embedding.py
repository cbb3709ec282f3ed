"""The README's embedding examples run as written: a slixmpp application registering the plugin
(against a real server of each kind), and a client without slixmpp driving the engine directly."""

from __future__ import annotations

from .doc_examples import example as _example
from .xmpp_server import Accounts, XmppServer


def test_engine_without_slixmpp_example_runs() -> None:
    code = _example("engine")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (engine example)", "exec"), namespace)
    assert namespace["result"] == "Hello, Bob"


def test_slixmpp_plugin_example_runs(xmpp_server: XmppServer) -> None:
    # the example's own account names (alice, bob): a share without a prefix, the only one
    server = Accounts.unprefixed(xmpp_server, ("alice", "bob"))
    code = _example("slixmpp plugin")
    namespace: dict[str, object] = {
        "SERVER": ("127.0.0.1", server.port),
        "CA_FILE": server.cert,
        "DOMAIN": server.domain,
    }
    exec(compile(code, "README.md (plugin example)", "exec"), namespace)
    assert namespace["received"] == ["Hi Bob, from a slixmpp bot"]
