#!/usr/bin/env bash
# Set up (Debian packages, .venv, pip install -e ".[test]"; see _setup.sh) and run the
# demo: .venv/bin/e2ee demo [args...]
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

exec "$VENV/bin/e2ee" demo "$@"
