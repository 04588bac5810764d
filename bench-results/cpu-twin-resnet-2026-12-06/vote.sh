#!/bin/bash
# votes: A = resnet-s + transformer-s (the recipe's pair, from the suite / tts-close runs), B = resnet-s + a second resnet-s (seed 1)
cd /work/main
declare -A RUN=([hard]=/tmp/clone-suite/runs-bench/20261206-220036/boss [tts]=/tmp/clone-suite/runs-bench/20261206-220916/boss \
  [many]=/tmp/clone-suite/runs-bench/20261206-221753/boss [tts-close]=/tmp/clone-tie/runs-bench/20261206-214217/boss)
for comp in tts-close tts hard many; do
  r=${RUN[$comp]}; out=/work/exp/twin/votes-$comp; mkdir -p $out
  for pair in A B; do
    if [ $pair = A ]; then m2=$r/transformer-s; else m2=/work/exp/twin/resnet-s1-$comp; fi
    .venv/bin/kit ensemble $r/resnet-s $m2 --vote auto --out $out --name $pair > $out/$pair.log 2>&1
    method=$(python3 -c "import json; m=json.load(open('$out/$pair.json')); print(m['method'], round(m['oof_acc'],4), {k: round(v['oof_acc'],4) for k,v in m['candidates'].items()})")
    score=$(.venv/bin/kit score $out/$pair.csv --answers data/bench-${comp}_answers.csv --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['public']['acc'], r['private']['acc'])")
    echo "$comp $pair $method test $score"
  done
  for m in $r/resnet-s $r/transformer-s /work/exp/twin/resnet-s1-$comp; do
    python3 -c "import json; d=json.load(open('$m/ids.json')); print('  $comp', '$m'.split('/')[-1] if 'exp' not in '$m' else 'resnet-s1', 'val', d['val_acc'])"
  done
done
