#!/bin/bash
cd benches/results/ab-2ae7042-9309c69-amd/perf-stat
for i in 1 2 3 4 5; do
 for b in before after; do
  perf stat -e context-switches,cpu-migrations,task-clock -o $b-$i.perf ./compare-$b --frameworks zrpc --points 1000x1 --duration 5 --rounds 1 > $b-$i.txt 2>&1
 done
done
echo done > done
# The binaries are compare of 2ae7042 (before) and 9309c69 (after), release builds; raw-*.txt
# came from the after build with the same perf stat line and --frameworks raw-mux, five times.
