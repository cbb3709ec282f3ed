# Shared setup for scripts/test.sh, scripts/demo.sh and scripts/gen_proto.sh (sourced, not run).
#
# On a fresh Debian 12 machine (as root) it installs the Debian packages that are missing
# (python3, python3-venv, gnupg, prosody, ejabberd, openssl, tmux, and for the browser tests chromium,
# chromium-driver and npm: one `apt-get update`, only if something is missing),
# creates .venv with Python 3.11+ and installs the project with its test extra:
#     pip install -e ".[test]"
# and the web client the browser tests run against (Converse.js, pinned in
# tests/converse/package-lock.json) with `npm ci`, again only when missing or changed.
# The install is skipped when neither pyproject.toml nor the set of top-level packages
# changed since the last successful install (stamp file inside .venv).
#
# Afterwards: ROOT = repository root (also the working directory), VENV = $ROOT/.venv.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.xmpp-e2ee-install.stamp"
cd "$ROOT"

_say() { printf 'setup: %s\n' "$*" >&2; }

_py_ok() {  # is "$1" a Python >= 3.11?
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

_pick_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && _py_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

_apt_install() {  # one `apt-get update`, then install every package named
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            _say "missing Debian packages ($*) and not root: install them, then run again"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _say "missing packages ($*) and no apt-get: install them, then run again"
        return 1
    fi
    _say "installing Debian packages: $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

_venv_ok() {
    [ -x "$VENV/bin/python" ] && _py_ok "$VENV/bin/python" \
        && "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

_make_venv() {  # create .venv with pip; on failure leave nothing behind
    rm -rf "$VENV"
    if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && _venv_ok; then
        return 0
    fi
    rm -rf "$VENV"
    return 1
}

# --- 1. Debian packages (gnupg, prosody, ejabberd, openssl, python3, python3-venv, chromium, npm)
# Prosody and ejabberd are the XMPP servers the tests start privately on 127.0.0.1, with their
# own ports, directories and (ejabberd) Erlang node name and distribution port: never the
# system services. If a package's postinst starts a system server, the tests do not use it and
# nothing of theirs collides with it.
_missing=()
command -v gpg >/dev/null 2>&1 || _missing+=(gnupg)
command -v prosody >/dev/null 2>&1 || _missing+=(prosody)
command -v ejabberdctl >/dev/null 2>&1 || _missing+=(ejabberd)
command -v openssl >/dev/null 2>&1 || _missing+=(openssl)
# tests/test_converse.py: Converse.js in headless Chromium, installed from npm
command -v chromium >/dev/null 2>&1 || _missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || _missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || _missing+=(npm)
# tests/test_cli_chat.py: `e2ee chat` driven in a real terminal
command -v tmux >/dev/null 2>&1 || _missing+=(tmux)
PYTHON="$(_pick_python || true)"
[ -n "$PYTHON" ] || _missing+=(python3 python3-venv)

if ! _venv_ok; then
    # Probe by creating the real venv: Debian's python3 lacks ensurepip without python3-venv.
    if [ -z "$PYTHON" ] || ! _make_venv; then
        _missing+=(python3-venv)
    fi
fi

if [ ${#_missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    _apt_install $(printf '%s\n' "${_missing[@]}" | sort -u)
    PYTHON="$(_pick_python || true)"
    if [ -z "$PYTHON" ]; then
        _say "no Python >= 3.11 found (python3.11 or python3)"
        exit 1
    fi
fi

# --- 2. the virtual environment ---------------------------------------------------------
if ! _venv_ok; then
    _say "creating .venv with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
    if ! _make_venv; then
        _say "could not create .venv with $PYTHON -m venv"
        exit 1
    fi
fi

# --- 3. pip install -e ".[test]" unless nothing changed ----------------------------------
_stamp_value() {
    {
        sha256sum pyproject.toml
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
        for pkg in e2ee keystore client; do  # a new top-level package needs a reinstall
            if [ -d "$pkg" ]; then echo "package $pkg"; fi
        done
    } | sha256sum | cut -d' ' -f1
}

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(_stamp_value)" ]; then
    _say "pip install -e \".[test]\""
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    _stamp_value >"$STAMP"
fi

# --- 4. Converse.js for the browser tests: npm ci unless the lock file is what was installed ---
_web="$ROOT/tests/converse"
_web_stamp="$_web/node_modules/.xmpp-e2ee-npm.stamp"
if [ ! -f "$_web/node_modules/converse.js/dist/converse.min.js" ] || [ ! -f "$_web_stamp" ] \
        || [ "$(cat "$_web_stamp")" != "$(sha256sum "$_web/package-lock.json" | cut -d' ' -f1)" ]; then
    _say "npm ci in tests/converse (Converse.js for the browser tests)"
    (cd "$_web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    sha256sum "$_web/package-lock.json" | cut -d' ' -f1 >"$_web_stamp"
fi

unset _missing _web _web_stamp
