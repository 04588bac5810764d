set -x
date
make bench-suite
date
.venv/bin/kit data synth --preset tts-close --out data/bench-tts-close
date
.venv/bin/kit bench --accuracy --data data/bench-tts-close --out bench-close
date
