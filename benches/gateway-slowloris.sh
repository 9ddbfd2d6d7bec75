#!/bin/bash
# The gateway under `gateway slowloris`, with the listen queue watched: a fresh `gateway serve
# --max-connections MAX`, then CONNS connections of 60 KiB of a head that never ends for SECONDS,
# while a well-behaved client calls on a fresh connection every 20 ms; the listener's accept
# queue (`ss`'s Recv-Q, and its backlog) is sampled every 50 ms. Needs a release build:
#
#   cargo build --release -p zrpc-benches --features gateway --bin gateway
#   bash benches/gateway-slowloris.sh [MAX [CONNS [SECONDS]]]     # defaults 4096 16384 10
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GATEWAY:-target/release/gateway}
MAX=${1:-4096}
CONNS=${2:-16384}
SECS=${3:-10}
work=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/in"
# `serve` runs until its standard input closes: the fifo, held open on fd 3 until the end.
$G serve --max-connections "$MAX" < "$work/in" > "$work/addresses" 2>&1 &
pid=$!
exec 3>"$work/in"
until grep -q floor "$work/addresses"; do sleep 0.1; done
read -r _ _ _ http _ _ < "$work/addresses"
port=${http##*:}
echo "## serve --max-connections $MAX, $CONNS connections, ${SECS}s,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
(
  end=$((SECONDS + SECS))
  while [ $SECONDS -lt "$end" ]; do
    ss -ltnH "sport = :$port" | awk '{print $2 + 0, $3 + 0}'
    sleep 0.05
  done > "$work/queue"
) &
$G slowloris "$http" --conns "$CONNS" --head-bytes 61440 --seconds "$SECS" --pid "$pid"
wait $!
exec 3>&-
wait "$pid"
grep gateway: "$work/addresses"
queue=$(awk '{print $1}' "$work/queue" | sort -n | uniq -c | awk '{printf "%s×%s ", $1, $2}')
echo "accept queue (Recv-Q) sampled every 50 ms, count×length: $queue; backlog $(awk 'NR == 1 {print $2}' "$work/queue")"
