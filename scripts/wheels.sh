#!/usr/bin/env bash
# Build the wheels users install, and the sdist, into dist/ (or --out DIR):
#   - one abi3 wheel for CPython 3.10 and later (the stable ABI: 3.10, 3.11, 3.12, 3.13, 3.14...);
#   - one wheel for CPython 3.9, when a python3.9 is found (on PATH or under pyenv);
#   - the sdist.
# Both wheels are tagged manylinux2014 (glibc 2.17 and later: Debian 9+, Ubuntu 18.04+, RHEL 7+),
# linked with zig (the `ziglang` package of requirements-dev.txt) so that the machine that builds
# them may have a newer glibc. `--profile ci` builds faster, otherwise identical wheels (the tests).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
profile=release
out=dist
while [[ $# -gt 0 ]]; do
    case $1 in
        --profile) profile=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) printf 'usage: %s [--profile PROFILE] [--out DIR]\n' "$0" >&2; exit 2 ;;
    esac
done

if [[ ! -x $VENV/bin/maturin ]] || ! "$VENV/bin/python" -m ziglang version >/dev/null 2>&1; then
    printf '==> %s lacks maturin or ziglang: run `make venv` first\n' "$VENV" >&2
    exit 1
fi
# maturin runs zig as `python -m ziglang` with the first python on PATH.
export PATH="$PWD/$VENV/bin:$PATH"

python39=$(command -v python3.9 || true)
# A pyenv shim is on PATH even when it cannot run 3.9 (not the selected version): try it.
if [[ -n $python39 ]] && ! "$python39" -c '' >/dev/null 2>&1; then
    python39=
fi
if [[ -z $python39 ]] && command -v pyenv >/dev/null 2>&1; then
    python39=$(ls -d "$(pyenv root)"/versions/3.9*/bin/python3.9 2>/dev/null | tail -n 1 || true)
fi

build=(maturin build --quiet --profile "$profile" --zig --compatibility manylinux2014 --out "$out")
printf '==> abi3 wheel (CPython >= 3.10), profile %s\n' "$profile"
"${build[@]}" --features abi3 --interpreter "$VENV/bin/python"
if [[ -n $python39 ]]; then
    printf '==> CPython 3.9 wheel (%s)\n' "$python39"
    "${build[@]}" --interpreter "$python39"
else
    printf '==> no CPython 3.9 found (python3.9 on PATH or under pyenv): no cp39 wheel\n' >&2
fi
printf '==> sdist\n'
maturin sdist --out "$out" >/dev/null
ls -1 "$out"
