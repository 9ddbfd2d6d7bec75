#!/bin/bash
# The command, before (b26d521) and after (7c502e7), two pairs taking turns.
cd /tmp/s35/ab2  # where the two builds were copied
for pass in before-1 after-1 after-2 before-2; do
  bin=./compare-${pass%-*}
  echo "== $pass $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> progress.log
  $bin --frameworks zrpc,raw-mux,tarpc --points 1x1,100x1,1000x1 --rounds 3 > $pass.txt 2>&1
done
echo "done $(date -u +%H:%M:%S)" >> progress.log
