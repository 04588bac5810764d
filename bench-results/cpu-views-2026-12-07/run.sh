set -x
cd /work/suite36
for c in hard tts many tts-close; do
  date
  .venv/bin/kit recipe run boss --data data/bench-$c --runs /work/views37/runs-$c --no-progress > /work/views37/$c.log 2>&1
done
date
