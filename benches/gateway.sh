#!/bin/bash
# Issue 14's gateway numbers in one run: direct calls, DynamicClient, the gateway under wrk and
# the HTTP floor, at 1 and 100 callers, each path in turn, ROUNDS rounds (default 2) of DURATION
# (default 5) each. Needs a release build and wrk:
#
#   cargo build --release -p zrpc-benches --features gateway --bin gateway
#   bash benches/gateway.sh > benches/results/gateway-$(git rev-parse --short HEAD).txt
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GATEWAY:-target/release/gateway}
ROUNDS=${ROUNDS:-2}
SECONDS_EACH=${DURATION:-5}
work=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null || true; rm -rf "$work"' EXIT
$G body > "$work/echo.json"
mkfifo "$work/in"
# `serve` runs until its standard input closes: the fifo, held open on fd 3 until exit.
$G serve < "$work/in" > "$work/addresses" 2>&1 &
exec 3>"$work/in"
until grep -q floor "$work/addresses"; do sleep 0.1; done
read -r _ zrpc _ http _ floor < "$work/addresses"
echo "# benches/gateway.sh, $(git rev-parse --short HEAD),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(date -u)"
run_wrk() { BODY="$work/echo.json" wrk "$@" --latency -s benches/gateway.lua | grep -E " 50%| 99%|Requests/sec|Non-2xx|Socket errors"; }
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "### direct, 1 caller";      $G direct "$zrpc" --callers 1 --seconds "$SECONDS_EACH"
  echo "### direct, 100 callers";   $G direct "$zrpc" --callers 100 --seconds "$SECONDS_EACH"
  echo "### dynamic, 1 caller";     $G direct "$zrpc" --callers 1 --seconds "$SECONDS_EACH" --dynamic
  echo "### dynamic, 100 callers";  $G direct "$zrpc" --callers 100 --seconds "$SECONDS_EACH" --dynamic
  echo "### gateway, wrk -t1 -c1";  run_wrk -t1 -c1 -d"${SECONDS_EACH}s" "http://$http/Bench/echo"
  echo "### gateway, wrk -t2 -c100"; run_wrk -t2 -c100 -d"${SECONDS_EACH}s" "http://$http/Bench/echo"
  echo "### floor, wrk -t1 -c1";    run_wrk -t1 -c1 -d"${SECONDS_EACH}s" "http://$floor/floor"
  echo "### floor, wrk -t2 -c100";  run_wrk -t2 -c100 -d"${SECONDS_EACH}s" "http://$floor/floor"
done
