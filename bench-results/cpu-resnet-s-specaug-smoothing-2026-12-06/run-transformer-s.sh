#!/bin/bash
# with and without label smoothing 0.1, 6.5 min, one core each, two at a time (as the recipe trains survivors)
cd /work/main
one() { comp=$1 tag=$2; shift 2; out=/work/exp/ls/transformer-s-$comp-$tag
  .venv/bin/kit train --config /work/exp/cfg/transformer-s.toml --data data/bench-$comp --out $out --minutes 6.5 --no-progress "$@" > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/ls/results.txt 2>&1; }
SA="--set train.label_smoothing=0.1"
for comp in "$@"; do
  one $comp base & one $comp ls1 $SA & wait
done
echo done >> /work/exp/ls/results.txt
