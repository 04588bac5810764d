import json, sys, numpy as np, csv
from pathlib import Path
def load(run, m, data):
    d = Path(m) if m.startswith("/") else Path(run)/m
    ids = json.load(open(d/'ids.json'))
    v = np.load(d/'val_probs.npy'); t = np.load(d/'test_probs.npy')
    return ids, v, t
run, data = sys.argv[1], sys.argv[2]
members = sys.argv[3:]
mp = json.load(open(Path(data)/'mapping.json'))['speaker2id']
ans = {r['Id']: r['Category'] for r in csv.DictReader(open(data+'_answers.csv'))}
out = {}
for m in members:
    ids, v, t = load(run, m, data)
    yv = np.array(ids['val_labels']); yt = np.array([mp[ans[i]] for i in ids['test']])
    out[m] = (v, t)
pv = {m: out[m][0].argmax(1) for m in members}; pt = {m: out[m][1].argmax(1) for m in members}
for m in members: print(m, 'val', (pv[m]==yv).mean().round(4), 'test', (pt[m]==yt).mean().round(4))
a, b = members[:2]
for name, p, y in [('val', pv, yv), ('test', pt, yt)]:
    ra, rb = p[a]==y, p[b]==y
    print(name, 'oracle', (ra|rb).mean().round(4), 'both wrong', (~ra&~rb).mean().round(4), 'disagree', (p[a]!=p[b]).mean().round(4), 'a only', (ra&~rb).mean().round(4), 'b only', (rb&~ra).mean().round(4))
# simple log-prob average with weight grid
for w in [0.5, 0.6, 0.7]:
    s = w*np.log(out[a][1]+1e-9) + (1-w)*np.log(out[b][1]+1e-9)
    print('w', w, 'test', (s.argmax(1)==yt).mean().round(4))
