#!/bin/bash
# resnet-s with and without CMN (model.feature_norm), 6.5 min, one core each, the pair at once
cd /work/main
one() { comp=$1 norm=$2; out=/work/exp/cmn/resnet-s-$comp-$norm
  .venv/bin/kit train --config /work/exp/cmn/resnet-s.toml --data data/bench-$comp --out $out --minutes 6.5 --set model.feature_norm=$norm --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/cmn/results.txt 2>&1; }
for comp in tts-close tts many hard; do one $comp cmn & one $comp none & wait; done
echo done > /work/exp/cmn/DONE
