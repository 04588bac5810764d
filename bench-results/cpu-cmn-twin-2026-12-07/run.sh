#!/bin/bash
# Twin variants of resnet-s, trained for exactly the steps the recipe's resnet-s2 trained (session 30's
# suite runs), so machine load changes only the wall time: plain seed 2, cmn seed 1, cmn seed 2.
cd /work/main
declare -A RUN=([hard]=/tmp/suite30/kit/runs-bench/20261207-004954/boss [tts]=/tmp/suite30/kit/runs-bench/20261207-010714/boss \
  [many]=/tmp/suite30/kit/runs-bench/20261207-012455/boss [tts-close]=/tmp/suite30/kit/runs-bench/20261207-014502/boss)
one() { comp=$1; variant=$2; norm=$3; seed=$4; r=${RUN[$comp]}; out=/work/exp/cmntwin/$variant-$comp
  steps=$(python3 -c "import json; print(json.load(open('$r/resnet-s2/summary.json'))['step'])")
  [ -f $out/summary.json ] && grep -q '"stopped_reason"' $out/summary.json && return
  .venv/bin/kit train --config $r/resnet-s2/config.toml --data data/bench-$comp --out $out --fresh --no-progress \
    --set train.minutes=0 --set train.max_steps=$steps --set train.eval_every=$((steps / 4 + 1)) \
    --set model.feature_norm=$norm --set train.seed=$seed > $out.train.log 2>&1
  .venv/bin/kit predict $out --which last --no-progress > $out.predict.log 2>&1; }
export -f one; export RUN_DEF="$(declare -p RUN)"
for comp in tts-close tts many hard; do for v in "cmn1 cmn 1" "cmn2 cmn 2" "plain2 none 2"; do echo "$comp $v"; done; done |
  xargs -P 2 -L 1 bash -c 'eval "$RUN_DEF"; cd /work/main; one "$@"' _
echo done > /work/exp/cmntwin/done
