#!/bin/bash
# A third pair, after the second after-pass was disturbed: after 3, then before 3.
cd /tmp/s33/ab
for pass in after-3 before-3; do
  bin=./compare-${pass%-*}
  echo "== $pass $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> progress.log
  $bin --frameworks zrpc,raw-mux,tarpc --points 1x1,100x1,1000x1 --rounds 3 > $pass.txt 2>&1
done
echo "done $(date -u +%H:%M:%S)" >> progress.log
