#!/usr/bin/env bash
# Set up (Debian packages, .venv, pip install -e ".[test]"; see _setup.sh) and run the
# whole test suite. Extra arguments go to pytest, e.g.:
#   bash scripts/test.sh -m slow             # only the slow tests
#   bash scripts/test.sh -m ""               # everything, slow included
#   bash scripts/test.sh tests/test_vectors_files.py -x
# The exit code is pytest's; "no tests collected" (5) counts as a failure.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
fi
exit "$rc"
