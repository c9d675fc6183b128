#!/usr/bin/env bash
# Core figures for forkyard on this machine, with the default example app as workers:
#   - time from `forkyard run` to the first proxied 200
#   - forkyard's idle RSS
#   - wrk requests/s and p99 through forkyard (4 workers) vs direct to one worker,
#     interleaved A B A B over several rounds; medians reported.
# Usage: bench/core-figures.sh [rounds] [seconds]   (needs wrk, python3, curl-free)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
WORKERS=${WORKERS:-4}
BIN=./target/release/forkyard
[ -x "$BIN" ] || cargo build --release --locked
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
cat >"$tmp/config.yaml" <<YAML
proxy: { listen: "127.0.0.1:18180", threads: 1 }
admin: { listen: "127.0.0.1:18190" }
log: { level: warn }
pools:
  web:
    command: ["python3", "examples/app.py", "--port", "{port}"]
    workers: $WORKERS
    ports: "18101-18110"
    ready: { http: "/healthz", timeout: "30s", interval: "10ms" }
YAML

probe() { python3 - "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].split(":")
try:
    s = socket.create_connection((host, int(port)), timeout=1)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    sys.exit(0 if s.recv(12).startswith(b"HTTP/1.1 200") or s.recv(1) and False else 1)
except Exception:
    sys.exit(1)
PY
}

start=$(date +%s%N)
$BIN run -c "$tmp/config.yaml" 2>"$tmp/fy.log" &
fy=$!
until probe 127.0.0.1:18180; do sleep 0.01; done
first=$(( ($(date +%s%N) - start) / 1000000 ))
echo "time from 'forkyard run' to first proxied 200: ${first} ms"
# Let it settle, then read the idle RSS.
until [ "$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:18190/readyz').status)" 2>/dev/null)" = 200 ]; do sleep 0.05; done
sleep 2
echo "forkyard idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$fy/status)"

# Direct target: a fifth copy of the same app on its own port.
python3 examples/app.py --port 18120 2>/dev/null &
direct=$!
until probe 127.0.0.1:18120; do sleep 0.01; done

run_wrk() { # url -> "rps p99_ms"
  wrk -t1 -c32 -d"${SECS}s" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {print rps, p99}'
}
declare -a fy_rps fy_p99 d_rps d_p99
for r in $(seq 1 "$ROUNDS"); do
  read -r a b < <(run_wrk http://127.0.0.1:18120/); d_rps+=("$a"); d_p99+=("$b")
  read -r a b < <(run_wrk http://127.0.0.1:18180/); fy_rps+=("$a"); fy_p99+=("$b")
  echo "round $r: direct ${d_rps[-1]} req/s p99 ${d_p99[-1]} ms | forkyard ${fy_rps[-1]} req/s p99 ${fy_p99[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "median direct (1 worker):    $(median "${d_rps[@]}") req/s, p99 $(median "${d_p99[@]}") ms"
echo "median forkyard ($WORKERS workers): $(median "${fy_rps[@]}") req/s, p99 $(median "${fy_p99[@]}") ms"
echo "forkyard RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$fy/status)"
kill -TERM $fy; wait $fy || true
kill $direct 2>/dev/null || true
