"""OMEMO 2 (``urn:xmpp:omemo:2``)."""
