#!/bin/bash
# transformer-s variants at the survivor's time (6.5 min, one core each, always two at a time)
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811)
one() { comp=$1 tag=$2; shift 2; out=/work/exp/tf/$tag-$comp
  .venv/bin/kit train --config runs-bench/${RUN[$comp]}/boss/transformer-s/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set train.max_minutes=0 "$@" --no-progress > $out.train.log 2>&1
  .venv/bin/python bench-results/cpu-resnet-s-crop-2026-12-05/valacc.py $out >> /work/exp/tf/results.txt 2>&1; }
one tts stats --set model.pooling=stats & one many stats --set model.pooling=stats & wait
one tts d128 --set model.d_model=128 --set model.n_heads=4 --set model.ffn_dim=512 & one many d128 --set model.d_model=128 --set model.n_heads=4 --set model.ffn_dim=512 & wait
one tts l2 --set model.n_layers=2 & one many l2 --set model.n_layers=2 & wait
echo done > /work/exp/tf/DONE
