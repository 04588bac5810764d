#!/bin/bash
# resnet-s: lr 6e-3 at batch 32 and at batch 64 (shipped: 4e-3, batch 32), 128 crops, 6.5 min, one core each, two at a time
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811 [tts-close]=20261205-123940)
one() { comp=$1 lr=$2 bs=$3; out=/work/exp/lr6/resnet-s-$comp-lr$lr-b$bs
  .venv/bin/kit train --config runs-bench/${RUN[$comp]}/boss/resnet-s/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set train.max_minutes=0 --set data.segment_len=128 --set train.lr=$lr --set train.batch_size=$bs --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/lr6/results.txt 2>&1; }
one tts 6e-3 32 & one tts 6e-3 64 & wait
one many 6e-3 32 & one many 6e-3 64 & wait
echo done > /work/exp/lr6/DONE
