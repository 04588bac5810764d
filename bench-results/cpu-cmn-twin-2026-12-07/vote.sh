#!/bin/bash
# votes of resnet-s (the recipe's, session 30's suite) with each twin: s2 = the recipe's resnet-s2 (seed 1, plain),
# plain2 (seed 2), cmn1, cmn2 (feature_norm cmn, seeds 1, 2), all at resnet-s2's steps
cd /work/main
declare -A RUN=([hard]=/tmp/suite30/kit/runs-bench/20261207-004954/boss [tts]=/tmp/suite30/kit/runs-bench/20261207-010714/boss \
  [many]=/tmp/suite30/kit/runs-bench/20261207-012455/boss [tts-close]=/tmp/suite30/kit/runs-bench/20261207-014502/boss)
score() { .venv/bin/kit score $1 --answers data/bench-${2}_answers.csv --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['public']['acc'], r['private']['acc'])"; }
for comp in ${@:-tts-close tts many hard}; do
  r=${RUN[$comp]}; out=/work/exp/cmntwin/votes-$comp; mkdir -p $out
  for twin in s2 plain2 cmn1 cmn2; do
    if [ $twin = s2 ]; then m2=$r/resnet-s2; else m2=/work/exp/cmntwin/$twin-$comp; fi
    .venv/bin/kit ensemble $r/resnet-s $m2 --vote auto --out $out --name $twin > $out/$twin.log 2>&1
    method=$(python3 -c "import json; m=json.load(open('$out/$twin.json')); print(m['method'], round(m['oof_acc'],4))")
    val=$(python3 -c "import json; print(json.load(open('$m2/ids.json'))['val_acc'])")
    mt=$(ls $m2/member_test.csv 2>/dev/null && score $m2/member_test.csv $comp)
    echo "$comp $twin vote $method test $(score $out/$twin.csv $comp) | twin val $val test ${mt#*csv}"
  done
  echo "$comp resnet-s test $(score $r/resnet-s/member_test.csv $comp)"
done
