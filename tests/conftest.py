"""Shared pytest configuration.

Tests import the vector loader as ``tests.vectors`` (``vectors/`` is pure data). Markers (``slow``, ``bench``) are
registered there too; the default run excludes ``slow``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .xmpp_server import KINDS, Accounts, XmppServer, running_server


def _kinds() -> list[str]:
    """Every server kind, unless ``E2EE_TEST_SERVERS`` (comma-separated) narrows it for a quick
    local run; the default run and CI use both."""
    wanted = os.environ.get("E2EE_TEST_SERVERS")
    return [k for k in KINDS if not wanted or k in wanted.split(",")]


@pytest.fixture(scope="session", params=_kinds())
def xmpp_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[XmppServer]:
    """The one parameter of every server-backed test: a private server of each kind
    (``prosody``, ``ejabberd``), started once per test session.  Tests do not use it directly
    but through :func:`server` (their own account names on it) or ask for a fresh one with
    :func:`tests.xmpp_server.running_server` where they need a server of their own."""
    with running_server(request.param, tmp_path_factory.mktemp(request.param)) as server:
        yield server


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, xmpp_server: XmppServer) -> Accounts:
    """This module's share of the session's server: accounts and rooms named after the module,
    with the users the module lists in ``SERVER_USERS`` registered (password ``<user>-pw``)."""
    users = getattr(request.module, "SERVER_USERS", ("alice", "bob"))
    return Accounts.fresh(xmpp_server, request.module.__name__.rsplit(".", 1)[-1], users)
