#!/bin/bash
# a second resnet-s (seed 1), 6.3 min, one core each, two at a time (as the recipe trains its survivors)
cd /work/main
one() { comp=$1; out=/work/exp/twin/resnet-s1-$comp
  .venv/bin/kit train --config /work/exp/twin/resnet-s-seed1.toml --data data/bench-$comp --out $out --minutes 6.3 --no-progress > $out.train.log 2>&1
  .venv/bin/kit predict $out --which last --no-progress > $out.predict.log 2>&1; }
one tts-close & one tts & wait
one hard & one many & wait
echo done > /work/exp/twin/done
