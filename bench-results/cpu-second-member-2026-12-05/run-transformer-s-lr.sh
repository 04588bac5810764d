#!/bin/bash
# transformer-s at lr 4e-3 (the quick budget's 2e-3 doubled), 6.5 min, one core each, two at a time
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811 [tts-close]=20261205-123940)
one() { comp=$1 lr=$2; out=/work/exp/tflr/transformer-s-$comp-$lr
  .venv/bin/kit train --config runs-bench/${RUN[$comp]}/boss/transformer-s/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set train.max_minutes=0 --set train.lr=$lr --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/tflr/results.txt 2>&1; }
one tts 4e-3 & one many 4e-3 & wait
echo done > /work/exp/tflr/DONE
