set -x
date
d=$(mktemp -d) && git clone -q /work/main "$d/kit" && cd "$d/kit" && git log --oneline -1 && (time (make lint && make test)) 2>&1 | tail -8
date
cd /work/suite36 && git pull -q /work/main main && git log --oneline -1 && rm -rf bench-results-37 && make bench-suite > /work/views37/suite.log 2>&1
date
