#!/bin/bash
# resnet-s crop length on tts-close (median 750 frames; a check outside the suite), 6.5 min, one core each
cd /work/main
one() { seg=$1; out=/work/exp/crop-close/resnet-s-$seg
  .venv/bin/kit train --config runs-bench/20261205-123940/boss/resnet-s/config.toml --data data/bench-tts-close --out $out --minutes 6.5 --set train.max_minutes=0 --set data.segment_len=$seg --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/crop-close/results.txt 2>&1; }
one 128 & one 200 & wait
echo done > /work/exp/crop-close/DONE
