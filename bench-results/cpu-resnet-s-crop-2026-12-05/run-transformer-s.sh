#!/bin/bash
cd /work/main
one() { comp=$1 seg=$2 m=${3:-resnet-s}; out=/work/exp/seg/$m-$comp-$seg
  .venv/bin/kit train --config runs-bench/20261205-062126/boss/$m/config.toml --data data/bench-$comp --out $out --minutes 6.5 --set data.segment_len=$seg --no-progress > $out.train.log 2>&1
  .venv/bin/python /work/exp/seg/valacc.py $out >> /work/exp/seg/results2.txt 2>&1; }
one tts 96 transformer-s & one tts 128 transformer-s & wait
one hard 96 transformer-s & one hard 128 transformer-s & wait
one many 96 transformer-s & one many 128 transformer-s & wait
echo done > /work/exp/seg/DONE2
