#!/bin/bash
# Two builds of `compare` taking turns, as the README's A/B results were measured: two pairs
# (before, after, after, before), each pass's output in DIR/<pass>.txt, its start and the load
# in DIR/progress.log. By default each pass runs issue 15's command; options after DIR replace it.
#
#   git worktree add /tmp/base REV && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release -p zrpc-benches --bin compare)
#   cargo build --release -p zrpc-benches --bin compare
#   bash benches/ab.sh /tmp/base-target/release/compare target/release/compare benches/results/ab-REV-HEAD
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: benches/ab.sh BEFORE_COMPARE AFTER_COMPARE DIR [compare options...]" >&2
  exit 2
fi
before=$1
after=$2
dir=$3
shift 3
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--frameworks zrpc,raw-mux,tarpc --points 1x1,100x1,1000x1 --rounds 3)
fi
mkdir -p "$dir"
for pass in before-1 after-1 after-2 before-2; do
  case $pass in
    before-*) bin=$before ;;
    *) bin=$after ;;
  esac
  echo "== $pass $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$dir/progress.log"
  "$bin" "${args[@]}" > "$dir/$pass.txt" 2>&1
done
echo "done $(date -u +%H:%M:%S)" >> "$dir/progress.log"
