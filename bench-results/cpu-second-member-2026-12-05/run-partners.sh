#!/bin/bash
# a second strong member for the vote: resnet-s from another seed, ecapa-s with the survivor's time
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811)
one() { comp=$1 m=$2 tag=$3; shift 3; out=/work/exp/div/$tag-$comp
  .venv/bin/kit train --config runs-bench/${RUN[$comp]}/boss/$m/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set train.max_minutes=0 "$@" --no-progress > $out.train.log 2>&1
  .venv/bin/kit predict $out --no-progress > $out.predict.log 2>&1; echo "$out $?" >> /work/exp/div/done.txt; }
one tts resnet-s resnet-s1 --set train.seed=1 & one tts ecapa-s ecapa-s6 & wait
one hard resnet-s resnet-s1 --set train.seed=1 & one hard ecapa-s ecapa-s6 & wait
one many resnet-s resnet-s1 --set train.seed=1 & one many ecapa-s ecapa-s6 & wait
echo done > /work/exp/div/DONE
