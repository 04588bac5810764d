import sys, time, torch
torch.set_num_threads(1)
exec(open("bench-results/cpu-channels-last-2026-12-05/step-rate.py").read().split("for dt in")[0])
dt, cl = sys.argv[2], sys.argv[3] == "1"
print(dt, cl, f"{bench(dt, cl):.2f}", flush=True)
