"""Legacy OMEMO (``eu.siacs.conversations.axolotl``)."""
