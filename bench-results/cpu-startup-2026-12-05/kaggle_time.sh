#!/bin/bash
# kit submit --wait against the local stand-in: the tree before (66477e3) and after (the imports branch)
set -u
PY=/work/main/.venv/bin/python
S=/tmp/kt; rm -rf $S; mkdir -p $S
python3 -c "
import csv
rows=list(csv.DictReader(open('/work/main/data/bench-hard_answers.csv')))
w=csv.writer(open('$S/sub.csv','w',newline='')); w.writerow(['Id','Category'])
[w.writerow([r['Id'],r['Category']]) for r in rows]"
cd $S && PYTHONPATH=/tmp/wt $PY -m kit kaggle serve --data /work/main/data/bench-hard --port 8799 > serve.out 2> serve.err &
SP=$!; sleep 8
export KAGGLE_USERNAME=rehearsal KAGGLE_KEY=anything KIT_KAGGLE_POLL=1
for tree in /tmp/old /tmp/wt /tmp/old /tmp/wt; do
  d=$S/$(basename $tree)-$RANDOM; mkdir -p $d; cd $d; cp $S/sub.csv sub.csv
  t0=$(date +%s.%N)
  PYTHONPATH=$tree $PY -m kit submit sub.csv -m "timing $tree" --data /work/main/data/bench-hard --wait --endpoint http://127.0.0.1:8799 > out.txt 2> err.txt
  rc=$?; t1=$(date +%s.%N)
  echo "$tree rc=$rc $(python3 -c "print(round($t1-$t0,2))") s  $(tail -1 out.txt)"
done
kill $SP
