#!/bin/bash
# replicate votes: A = resnet-s (seed 2) + transformer-s (seed 1), B = resnet-s (seed 2) + resnet-s (seed 3)
cd /work/main
for comp in tts-close many; do
  lead=/work/exp/twin/r2-resnet-s-seed2-$comp; out=/work/exp/twin/votes2-$comp; mkdir -p $out
  for pair in A B; do
    if [ $pair = A ]; then m2=/work/exp/twin/r2-transformer-s-seed1-$comp; else m2=/work/exp/twin/r2-resnet-s-seed3-$comp; fi
    .venv/bin/kit ensemble $lead $m2 --vote auto --out $out --name $pair > $out/$pair.log 2>&1
    method=$(python3 -c "import json; m=json.load(open('$out/$pair.json')); print(m['method'], round(m['oof_acc'],4))")
    score=$(.venv/bin/kit score $out/$pair.csv --answers data/bench-${comp}_answers.csv --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['public']['acc'], r['private']['acc'])")
    echo "$comp $pair $method test $score"
  done
  for m in $lead /work/exp/twin/r2-transformer-s-seed1-$comp /work/exp/twin/r2-resnet-s-seed3-$comp; do
    python3 -c "import json; d=json.load(open('$m/ids.json')); s=json.load(open('$m/summary.json')); print('  $comp', '$m'.split('/')[-1], 'val', d['val_acc'], 'steps', s['step'])"
  done
done
