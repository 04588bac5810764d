#!/bin/bash
# kit's own calibrated, cross-fitted vote (auto) over pairs and a triple; test scored with the answer key
cd /work/main
declare -A RUN=([hard]=20261205-100128 [tts]=20261205-100948 [many]=20261205-101811)
comp=$1; R=runs-bench/${RUN[$comp]}/boss; E=/work/exp/div
vote() { name=$1; shift; .venv/bin/kit ensemble --vote auto --name $name --out $E/votes-$comp "$@" > $E/votes-$comp/$name.log 2>&1
  echo "$comp $name $(tail -n 1 $E/votes-$comp/$name.log | cut -c1-80) | $(.venv/bin/kit score --json --answers data/bench-${comp}_answers.csv $E/votes-$comp/$name.csv | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d)')"; }
mkdir -p $E/votes-$comp
for m in $R/resnet-s $R/transformer-s $E/resnet-s1-$comp $E/ecapa-s6-$comp; do echo "$comp $(basename $m) $(.venv/bin/kit score --json --answers data/bench-${comp}_answers.csv $m/member_test.csv)"; done
vote recipe $R/resnet-s $R/transformer-s
vote two-resnets $R/resnet-s $E/resnet-s1-$comp
vote resnet-ecapa $R/resnet-s $E/ecapa-s6-$comp
vote three $R/resnet-s $R/transformer-s $E/resnet-s1-$comp
