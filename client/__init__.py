"""The slixmpp client session and the ``e2ee`` command line (the only code with network I/O)."""
