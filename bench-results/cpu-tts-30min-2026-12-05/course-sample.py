"""The course sample trained 30 minutes on tts (as kit.bench_accuracy trains it), scored with the key."""
import json, sys, time
from kit import course
from kit.submission import score_submission
data, minutes = sys.argv[1], float(sys.argv[2])
t0 = time.time()
c = course.train_for(data, minutes, log=lambda m: print(m, file=sys.stderr, flush=True))
csv = course.write_submission(c["model"], c["layout"], "/tmp/cs/course_sample.csv")
s = score_submission(csv, data + "_answers.csv")
out = {"data": data, "minutes": c["seconds"] / 60, "valid_acc": c["valid_acc"], "public": s["public"]["acc"],
       "private": s["private"]["acc"], "wall_minutes": (time.time() - t0) / 60,
       "time": time.strftime("%Y-%m-%d %H:%M:%S")}
print(json.dumps(out))
