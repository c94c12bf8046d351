#!/usr/bin/env bash
# Set up a development environment from a clean clone: a virtualenv in .venv with the pinned
# development dependencies, and the zcasgi extension built (cargo profile `ci`) and installed
# into it. Safe to run again: each step is skipped when it has nothing to do, except the
# extension build, which cargo makes incremental.
#
# Usage: scripts/bootstrap.sh [--venv-only]
#   --venv-only   stop after the virtualenv and its requirements (enough for ruff and mypy)
set -euo pipefail

venv_only=false
case "${1:-}" in
    "") ;;
    --venv-only) venv_only=true ;;
    *) printf 'usage: %s [--venv-only]\n' "$0" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
REQUIREMENTS="requirements-dev.txt"
STAMP="$VENV/.requirements-dev.sha256"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

step() { printf '==> %s\n' "$*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    # The pinned tools (hypothesis, websockets, matplotlib) need 3.11; the package itself 3.9.
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        printf 'bootstrap: %s is %s; the development environment needs Python >= 3.11 (set PYTHON=...)\n' \
            "$PYTHON" "$("$PYTHON" --version 2>&1)" >&2
        exit 1
    fi
    step "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$wanted" ]]; then
    step "installing $REQUIREMENTS into $VENV"
    "$VENV/bin/python" -m pip install --quiet --requirement "$REQUIREMENTS"
    printf '%s\n' "$wanted" > "$STAMP"
else
    step "$REQUIREMENTS unchanged since last install"
fi

if $venv_only; then
    exit 0
fi

step "building the zcasgi extension (cargo profile ci) into $VENV"
VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" \
    "$VENV/bin/maturin" develop --quiet --profile ci

step "done: zcasgi is installed in $VENV (editable; rerun after Rust changes)"
