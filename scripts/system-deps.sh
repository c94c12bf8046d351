#!/usr/bin/env bash
# Install the Debian packages the test suite needs and that pip cannot provide:
#   redis-server   a real broker for the python-socketio AsyncRedisManager tests
#   iproute2       `ip`, with which tests/test_two_hosts.py makes its network namespaces
# With the argument `bench`, also those of the benchmark suite (`make bench-suite`):
#   libuv1         the libuv.so.1 that socketify, a peer server, loads at import
#   linux-perf     `perf`, for `python -m benchmarks.perf`
# Does nothing when they are already present. Needs root (or sudo) and apt-get; without them it
# says what is missing and exits 0, and the tests that need a package skip (or fail when CI is set).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [[ ${1:-} == bench ]]; then
    ldconfig -p 2>/dev/null | grep -q 'libuv\.so\.1 ' || missing+=(libuv1)
    command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    printf '==> system packages present\n'
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    printf '==> not installing %s: needs root or passwordless sudo\n' "${missing[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    printf '==> not installing %s: apt-get not found\n' "${missing[*]}" >&2
    exit 0
fi

printf '==> installing %s with apt-get\n' "${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
