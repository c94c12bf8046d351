#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client (every case, including permessage-deflate) against
# zcasgi serving tests/apps/echo.py, once per backend, and summarise the results.
#
# Usage: scripts/autobahn.sh [--publish] [backend ...]        (default: mio tokio)
#        --publish also copies each backend's compact report (index.json, summary.md, and the
#        per-case reports of every case that is not OK) to docs/conformance/<backend>/.
#        AUTOBAHN_CASES='["1.*", "12.1.*"]' scripts/autobahn.sh mio     (a subset of the cases)
#
# The suite needs Python 2.7: set PYTHON2, or have pyenv's 2.7.18 installed. Everything it
# installs goes under .autobahn/ (gitignored): a Python 3 venv holding virtualenv<20.22 (the last
# series that still creates Python 2 environments), a Python 2 virtualenv with the pinned
# autobahntestsuite wheel, the generated specs, the server logs and the reports
# (.autobahn/reports/<backend>/index.html, index.json, summary.md).
#
# zcasgi itself must be installed in .venv (scripts/bootstrap.sh). Each server is started on a
# free port and stopped by its PID. A full run takes about 13 minutes per backend, most of it in
# sections 12 and 13 (compression).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUITE_VERSION="25.10.1"
WORK=".autobahn"
TOOLS="$WORK/tools"
PY2ENV="$WORK/py2"
PYTHON3="${PYTHON3:-python3}"
ZCASGI_PYTHON="${ZCASGI_PYTHON:-.venv/bin/python}"
CASES="${AUTOBAHN_CASES:-[\"*\"]}"
PUBLISH=false
if [[ "${1:-}" == "--publish" ]]; then
    PUBLISH=true
    shift
fi
BACKENDS=("$@")
if [[ ${#BACKENDS[@]} -eq 0 ]]; then
    BACKENDS=(mio tokio)
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

step() { printf '==> %s\n' "$*"; }

find_python2() {
    if [[ -n "${PYTHON2:-}" ]]; then
        printf '%s\n' "$PYTHON2"
    elif command -v pyenv >/dev/null && [[ -x "$(pyenv root)/versions/2.7.18/bin/python2.7" ]]; then
        printf '%s\n' "$(pyenv root)/versions/2.7.18/bin/python2.7"
    elif command -v python2.7 >/dev/null; then
        command -v python2.7
    else
        echo "autobahn: Python 2.7 not found (set PYTHON2=/path/to/python2.7)" >&2
        exit 1
    fi
}

if [[ ! -x "$ZCASGI_PYTHON" ]]; then
    echo "autobahn: $ZCASGI_PYTHON not found; run scripts/bootstrap.sh first" >&2
    exit 1
fi

# 1. The suite, in a Python 2 virtualenv.
if [[ ! -x "$PY2ENV/bin/wstest" ]] \
    || [[ "$(cat "$PY2ENV/.suite-version" 2>/dev/null)" != "$SUITE_VERSION" ]]; then
    python2="$(find_python2)"
    if [[ ! -x "$TOOLS/bin/virtualenv" ]]; then
        step "creating $TOOLS with virtualenv<20.22"
        "$PYTHON3" -m venv "$TOOLS"
        "$TOOLS/bin/pip" install --quiet 'virtualenv<20.22'
    fi
    step "creating $PY2ENV with $("$python2" --version 2>&1)"
    "$TOOLS/bin/virtualenv" --quiet -p "$python2" "$PY2ENV"
    step "installing autobahntestsuite==$SUITE_VERSION"
    "$PY2ENV/bin/pip" install --quiet --no-python-version-warning "autobahntestsuite==$SUITE_VERSION"
    printf '%s\n' "$SUITE_VERSION" >"$PY2ENV/.suite-version"
fi

free_port() {
    "$ZCASGI_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() {
    local port="$1" pid="$2"
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if "$ZCASGI_PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

summarise() {
    local backend="$1" outdir="$2"
    "$ZCASGI_PYTHON" - "$backend" "$outdir" "$SUITE_VERSION" <<'EOF'
import collections, datetime, json, pathlib, sys

backend, outdir, version = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
index = json.loads((outdir / "index.json").read_text())
(agent, cases), = index.items()
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
counts = collections.Counter(c["behavior"] for c in cases.values())
close = collections.Counter(c["behaviorClose"] for c in cases.values())

def key(case_id):
    return [int(p) for p in case_id.split(".")]

lines = [
    f"# Autobahn|Testsuite {version}: zcasgi, backend {backend}",
    "",
    f"Run on {datetime.date.today().isoformat()}, {len(cases)} cases (agent `{agent}`).",
    "",
    "| behavior | cases |",
    "|---|---|",
]
lines += [f"| {b} | {counts.get(b, 0)} |" for b in order]
lines += [f"| {b} | {n} |" for b, n in sorted(counts.items()) if b not in order]
lines += ["", "Close behavior: " + ", ".join(f"{b} {n}" for b, n in sorted(close.items())), ""]
notable = [
    (cid, c) for cid, c in sorted(cases.items(), key=lambda kv: key(kv[0]))
    if c["behavior"] not in ("OK", "INFORMATIONAL") or c["behaviorClose"] not in ("OK", "INFORMATIONAL")
]
if notable:
    lines += ["| case | behavior | close | duration (ms) |", "|---|---|---|---|"]
    lines += [
        f"| {cid} | {c['behavior']} | {c['behaviorClose']} | {c['duration']} |" for cid, c in notable
    ]
else:
    lines.append("Every case is OK or INFORMATIONAL.")
slowest = sorted(cases.items(), key=lambda kv: -kv[1]["duration"])[:5]
lines += ["", "Slowest cases: " + ", ".join(f"{cid} ({c['duration']} ms)" for cid, c in slowest)]
text = "\n".join(lines) + "\n"
(outdir / "summary.md").write_text(text)
print(text)
EOF
}

publish() {
    local backend="$1" outdir="$2" dest="docs/conformance/$1"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$outdir/index.json" "$outdir/summary.md" "$dest/"
    # The full HTML tree is ~20 MB; keep only the reports of the cases that are not OK.
    "$ZCASGI_PYTHON" - "$outdir" "$dest" <<'EOF'
import json, pathlib, shutil, sys

outdir, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(cases,) = json.loads((outdir / "index.json").read_text()).values()
for case in cases.values():
    if case["behavior"] != "OK" or case["behaviorClose"] != "OK":
        report = outdir / case["reportfile"]
        shutil.copy(report, dest)
        shutil.copy(report.with_suffix(".html"), dest)
EOF
    step "published the $backend report to $dest"
}

status=0
for backend in "${BACKENDS[@]}"; do
    port="$(free_port)"
    outdir="$WORK/reports/$backend"
    spec="$WORK/fuzzingclient-$backend.json"
    log="$WORK/server-$backend.log"
    rm -rf "$outdir"
    mkdir -p "$outdir"
    cat >"$spec" <<EOF
{
    "outdir": "$outdir",
    "servers": [{"agent": "zcasgi-$backend", "url": "ws://127.0.0.1:$port"}],
    "cases": $CASES,
    "exclude-cases": [],
    "exclude-agent-cases": {}
}
EOF
    step "starting zcasgi (backend $backend) on 127.0.0.1:$port"
    PYTHONPATH="tests:.${PYTHONPATH:+:$PYTHONPATH}" "$ZCASGI_PYTHON" -m zcasgi apps.echo:app \
        --host 127.0.0.1 --port "$port" --backend "$backend" \
        --ws-per-message-deflate true --ws-max-size 16777216 \
        --log-level warning --no-access-log >"$log" 2>&1 &
    SERVER_PID=$!
    if ! wait_listening "$port" "$SERVER_PID"; then
        echo "autobahn: the $backend server did not start; its output:" >&2
        cat "$log" >&2
        exit 1
    fi
    step "running the fuzzing client against backend $backend (report in $outdir)"
    started=$SECONDS
    if ! "$PY2ENV/bin/wstest" -m fuzzingclient -s "$spec" >"$WORK/wstest-$backend.log" 2>&1; then
        echo "autobahn: wstest failed for $backend; see $WORK/wstest-$backend.log" >&2
        status=1
    fi
    step "backend $backend done in $((SECONDS - started)) s"
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "autobahn: the $backend server died during the run; see $log" >&2
        status=1
    fi
    stop_server
    if [[ -f "$outdir/index.json" ]]; then
        summarise "$backend" "$outdir"
        if $PUBLISH; then
            publish "$backend" "$outdir"
        fi
    fi
done
exit "$status"
