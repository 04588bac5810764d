#!/bin/bash
# resnet-s width: model.channels 12 / 16 (shipped 8), lr 4e-3, 128 crops, 6.5 min, one core each, two at a time
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811 [tts-close]=20261205-123940)
one() { comp=$1 ch=$2; out=/work/exp/width/resnet-s-$comp-c$ch
  .venv/bin/kit train --config runs-bench/${RUN[$comp]}/boss/resnet-s/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set train.max_minutes=0 --set data.segment_len=128 --set train.lr=4e-3 --set model.channels=$ch --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/width/results.txt 2>&1; }
one tts 12 & one tts 16 & wait
one many 12 & one many 16 & wait
one hard 12 & one hard 16 & wait
echo done > /work/exp/width/DONE
