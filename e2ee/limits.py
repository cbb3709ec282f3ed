"""Named limits of the engine, in one place (libsignal ``consts.rs`` style).

Changing one of these changes behaviour that tests and peers depend on; each says where its
value comes from.
"""

from __future__ import annotations

from typing import Final

#: Most message keys one incoming message may make us skip (derive and store), counted over
#: the old receiving chain and the new one together.  XEP-0384 suggests about 1000; it is also
#: python-omemo's default.  Checked before any key is derived.
MAX_SKIP: Final = 1000

#: Most skipped message keys kept per session; the oldest are evicted first (FIFO).
MAX_SKIPPED_KEYS_PER_SESSION: Final = 1000

#: Highest message counter a sending chain may reach (the wire field is a uint32).
MAX_CHAIN_COUNTER: Final = 2**32 - 1

#: Length of the OMEMO 2 ratchet MAC (HMAC-SHA-256 truncated).
MAC_LEN_OMEMO2: Final = 16

#: Length of the legacy OMEMO (libsignal v3) ratchet MAC.
MAC_LEN_LEGACY: Final = 8

#: Previous receiving chains remembered per session, so that a replayed message on one of
#: them is recognised as a duplicate (libsignal keeps 5 old receiving chains).
MAX_OLD_CHAINS: Final = 5
