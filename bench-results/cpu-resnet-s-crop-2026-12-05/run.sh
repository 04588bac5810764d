#!/bin/bash
# crop length at the quick budget's member time (6.5 min, one core each, always two at a time)
cd /work/main
one() { comp=$1 seg=$2 m=${3:-resnet-s}; out=/work/exp/seg/$m-$comp-$seg
  .venv/bin/kit train --config runs-bench/20261205-062126/boss/$m/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set data.segment_len=$seg --no-progress > $out.train.log 2>&1
  .venv/bin/python /work/exp/seg/valacc.py $out >> /work/exp/seg/results.txt 2>&1; }
one tts 128 & one tts 320 & wait
one tts 200 & one hard 128 & wait
one hard 320 & one hard 200 & wait
one many 128 & one many 320 & wait
one many 200 & one tts 200 transformer-s & wait
echo done > /work/exp/seg/DONE
