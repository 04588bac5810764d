#!/bin/bash
# replicate: a leader resnet-s (seed 2), partner A transformer-s (seed 1), partner B resnet-s (seed 3); 6.3 min, two at a time
cd /work/main
one() { comp=$1 cfg=$2; out=/work/exp/twin/r2-$cfg-$comp
  .venv/bin/kit train --config /work/exp/twin/$cfg.toml --data data/bench-$comp --out $out --minutes 6.3 --no-progress > $out.train.log 2>&1
  .venv/bin/kit predict $out --which last --no-progress > $out.predict.log 2>&1; }
one tts-close resnet-s-seed2 & one tts-close transformer-s-seed1 & wait
one tts-close resnet-s-seed3 & one many resnet-s-seed2 & wait
one many transformer-s-seed1 & one many resnet-s-seed3 & wait
echo done > /work/exp/twin/done2
