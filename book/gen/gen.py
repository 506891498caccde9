#!/usr/bin/env python3
"""Regenerates the book's chapters from book/gen/templates/*.md.

Every `@@name@@` placeholder in a template is replaced by the real output of
the command that produces it, so what the book shows is what the code does.
Edit the templates (and snippets/), never book/src/<chapter>.md directly, then
run from the repository root:

    python3 book/gen/gen.py

It builds cdsctl twice (plain, and with the bug-injection feature) and the
simulator test binary. Timings ("steps/s", "in 0.3s") differ from run to run.

A few placeholders show a seed chosen by what its run does (the first seed
that catches skip-joint, the first --compact seed whose trace shows a
snapshot transfer resumed by a new leader). The script checks that the run
still shows what the chapter describes, and stops with an error otherwise:
then read the new run and update the template.
"""
import glob, json, os, re, shutil, subprocess, sys, tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
GEN = os.path.join(ROOT, 'book', 'gen')
T = os.path.join(GEN, 'templates')
S = os.path.join(GEN, 'snippets')
W = tempfile.mkdtemp(prefix='book-gen-')
B = os.path.join(W, 'cdsctl-bugs')
C = os.path.join(ROOT, 'target', 'release', 'cdsctl')


def build():
    cargo = ['cargo', 'build', '--release', '--quiet', '-p', 'cdsctl']
    subprocess.run(cargo + ['--features', 'bug-injection'], cwd=ROOT, check=True)
    shutil.copy(C, B)
    subprocess.run(['cargo', 'test', '--release', '--quiet', '-p', 'raft-core', '--test', 'sim',
                    '--no-run'], cwd=ROOT, check=True)
    subprocess.run(cargo, cwd=ROOT, check=True)


def run(args, stdin=None, cwd=ROOT, ok=(0,)):
    p = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True)
    if p.returncode not in ok:
        sys.exit(f'FAILED {args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}')
    return (p.stdout + p.stderr).rstrip('\n')


def script(path):
    return open(path).read().rstrip('\n')


def scen_stdin(path, ok=(0,)):
    return run([C, 'raft', 'scenario', '/dev/stdin'], stdin=open(path).read(), ok=ok)


def scen(name):
    return run([C, 'raft', 'scenario', f'raft-core/tests/scenarios/{name}.txt'])


def from_line(text, marker):
    lines = text.split('\n')
    i = next(i for i, l in enumerate(lines) if l.startswith(marker))
    return '...\n' + '\n'.join(lines[i:])


def sim(*a):
    return run([C, 'raft', 'sim', *a], cwd=W)


build()
v = {}
v['intro-sweep'] = sim('--nodes', '5', '--seeds', '1-500', '--steps', '5000', '--faults', 'all')
v['intro-seed1'] = sim('--nodes', '5', '--seed', '1', '--steps', '5000', '--faults', 'all')
v['uptodate-script'] = script(os.path.join(S, 'uptodate.txt'))
v['uptodate'] = scen_stdin(os.path.join(S, 'uptodate.txt'))
v['backtrack-script'] = script(os.path.join(S, 'backtrack.txt'))
v['backtrack'] = scen_stdin(os.path.join(S, 'backtrack.txt'))
v['prevote-alone-script'] = script(os.path.join(S, 'prevote_alone.txt'))
v['prevote-alone'] = scen_stdin(os.path.join(S, 'prevote_alone.txt'))
v['prevote-cq-script'] = script(os.path.join(S, 'prevote_cq.txt'))
v['prevote-cq'] = scen_stdin(os.path.join(S, 'prevote_cq.txt'))
v['example-script'] = script(os.path.join(S, 'example.txt'))
v['example'] = scen_stdin(os.path.join(S, 'example.txt'))
v['fail-script'] = script(os.path.join(S, 'fail.txt'))
v['fail'] = scen_stdin(os.path.join(S, 'fail.txt'), ok=(1,))
for f in glob.glob(ROOT + '/raft-core/tests/scenarios/*.txt'):
    name = os.path.basename(f)[:-4]
    v['scenario:' + name] = scen(name)
v['scenario-tail:stale_leader'] = from_line(v['scenario:stale_leader'], '> isolate 1')
v['sim-nopv-nocq'] = sim('--seeds', '1-500', '--no-pre-vote', '--no-check-quorum')
a = sim('--seed', '7')
b = sim('--seed', '7', '--no-pre-vote', '--no-check-quorum')
v['sim-seed7-compare'] = f'$ cdsctl raft sim --seed 7\n{a}\n$ cdsctl raft sim --seed 7 --no-pre-vote --no-check-quorum\n{b}'
v['sim-help'] = run([C, 'raft', 'sim', '--help'])
v['sim-seed42'] = sim('--nodes', '5', '--seed', '42', '--steps', '5000', '--faults', 'all')
v['sim-sweep1000'] = sim('--nodes', '5', '--seeds', '1-1000', '--steps', '5000', '--faults', 'all')
sim('--seed', '42', '--trace', 'seed42.jsonl')
trace = open(W + '/seed42.jsonl').read().split('\n')
v['trace-transfer'] = '\n'.join([l for l in trace if '"ev":"transfer"' in l][:3])
v['trace-reads'] = '\n'.join([l for l in trace if '"ev":"read"' in l][:3])

# The bug-catching tests: the newest built test binary of tests/sim.rs.
bins = [b for b in glob.glob(ROOT + '/target/release/deps/sim-*') if os.access(b, os.X_OK) and not b.endswith('.d')]
if bins:
    newest = max(bins, key=os.path.getmtime)
    p = subprocess.run([newest, 'sweep_catches', '--nocapture', '--test-threads', '1'], cwd=ROOT + '/raft-core',
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    out = p.stdout
    keep = [l for l in out.split('\n') if l.strip() and not l.startswith('running')]
    v['bug-tests'] = '\n'.join(keep)
else:
    sys.exit('no sim test binary')

a = run([B, 'raft', 'sim', '--nodes', '5', '--seeds', '1-10', '--inject-bug', 'vote-for-stale-log'], ok=(1,))
al = a.split('\n')
a = '\n'.join(al[:4] + ['...'] + al[-2:])
b = run([B, 'raft', 'scenario', 'raft-core/tests/scenarios/figure8.txt', '--inject-bug', 'commit-old-term-by-count'], ok=(1,))
b = '\n'.join(['...'] + b.split('\n')[-9:])
v['inject-bug'] = f'$ cdsctl raft sim --nodes 5 --seeds 1-10 --inject-bug vote-for-stale-log\n{a}\n$ cdsctl raft scenario raft-core/tests/scenarios/figure8.txt --inject-bug commit-old-term-by-count\n{b}'

# Membership changes and snapshots.
for name in ['rollback', 'nocommit', 'removed_restart', 'removed_follower', 'removed_follower_off',
             'reset_stale_conf']:
    v[name.replace('_', '-') + '-script'] = script(os.path.join(S, name + '.txt'))
    v[name.replace('_', '-')] = scen_stdin(os.path.join(S, name + '.txt'))
v['reset-loss-script'] = script(os.path.join(S, 'reset_loss.txt'))
v['reset-loss'] = scen_stdin(os.path.join(S, 'reset_loss.txt'), ok=(1,))
v['sim-reconfig-compact'] = sim('--nodes', '5', '--seeds', '1-500', '--steps', '5000', '--faults', 'all',
                                '--reconfig', '--compact')

# skip-joint: a sweep with the bug catches it; the first failing seed's
# configuration events show the one-step change of several voters.
a = run([B, 'raft', 'sim', '--seeds', '1-50', '--reconfig', '--inject-bug', 'skip-joint'], cwd=W, ok=(1,))
al = a.split('\n')
tail = next(i for i, l in enumerate(al) if l.startswith('50 seeds'))
v['inject-skip-joint'] = '\n'.join(al[:2] + ['...'] + al[tail:])
seed = int(re.match(r'FAIL seed (\d+):', al[0]).group(1))
cmd = (f'target/release/cdsctl raft sim --nodes 5 --seed {seed} --steps 5000 --faults all --reconfig '
       f'--inject-bug skip-joint --trace skip.jsonl')
out = run([B, 'raft', 'sim', '--nodes', '5', '--seed', str(seed), '--steps', '5000', '--faults', 'all',
           '--reconfig', '--inject-bug', 'skip-joint', '--trace', 'skip.jsonl'], cwd=W, ok=(1,))
lines = [l for l in open(W + '/skip.jsonl').read().split('\n')
         if '"ev":"config"' in l and '"change":"loaded"' not in l]
initial = set(json.loads(open(W + '/skip.jsonl').readline())['meta']['voters'])
prev, one_step = {}, False
for l in lines:
    r = json.loads(l)
    before = prev.get(r['node'], initial)
    if r['role'] == 'leader' and not r['outgoing'] and len(before ^ set(r['voters'])) > 1:
        one_step = True
    prev[r['node']] = set(r['voters'])
if not one_step or 'Leader Completeness' not in out:
    sys.exit(f'skip-joint seed {seed}: not a Leader Completeness failure after a one-step change '
             'of several voters; '
             'update templates/membership.md')
v['skip-joint-trace-cmd'] = (f'{cmd}\n'
                             "grep '\"ev\":\"config\"' skip.jsonl | grep -v '\"change\":\"loaded\"'")
v['skip-joint-trace'] = out + '\n' + '\n'.join(lines)

# A snapshot transfer resumed by a new leader: the first --compact seed whose
# trace shows one (a chunk rejected on the way, installed in the end).
found = None
for seed in range(1, 200):
    run([C, 'raft', 'sim', '--nodes', '5', '--seed', str(seed), '--steps', '5000', '--faults', 'all',
         '--compact', '--trace', 'snap.jsonl'], cwd=W)
    text = [l for l in open(W + '/snap.jsonl').read().split('\n')[1:] if l]
    snaps = [json.loads(l) for l in text if '"ev":"snapshot"' in l]
    for r in snaps:
        if r['phase'] != 'resumed':
            continue
        f, i = r['node'], r['index']
        senders = {s['node'] for s in snaps
                   if s['phase'] == 'chunk_sent' and s['peer'] == f and s['index'] == i and s['t'] < r['t']}
        offers = [s for s in snaps if s['phase'] == 'offered' and s['peer'] == f and s['index'] == i
                  and s['t'] <= r['t']]
        if not senders or not offers or offers[-1]['node'] in senders:
            continue
        sel = [l for l in text if '"ev":"snapshot"' in l and f'"index":{i},' in l
               and (f'"node":{f},' in l or f'"peer":{f},' in l)]
        if (len(sel) <= 40 and '"phase":"installed"' in sel[-1]
                and any('"phase":"chunk_received"' in l and '"ok":false' in l for l in sel)):
            found = (seed, f, i, sel)
            break
    if found:
        break
if not found:
    sys.exit('no --compact seed below 200 shows a transfer resumed by a new leader')
seed, f, i, sel = found
v['snap-resume-cmd'] = (f'target/release/cdsctl raft sim --nodes 5 --seed {seed} --steps 5000 --faults all '
                        f'--compact --trace snap.jsonl\n'
                        f"grep '\"ev\":\"snapshot\"' snap.jsonl | grep '\"index\":{i},' | "
                        f"grep -E '\"node\":{f},|\"peer\":{f},'")
v['snap-resume'] = '\n'.join(sel)
v['snap-resume-node'] = str(f)
v['snap-resume-index'] = str(i)
v['snap-seed-num'] = str(seed)
v['snap-seed'] = sim('--nodes', '5', '--seed', str(seed), '--steps', '5000', '--faults', 'all', '--compact')

used = set()
for path in glob.glob(T + '/*.md'):
    s = open(path).read()
    def sub(m):
        k = m.group(1)
        if k not in v:
            sys.exit(f'{path}: unknown placeholder {k}')
        used.add(k)
        return v[k]
    s = re.sub(r'@@([a-z0-9:_-]+)@@', sub, s)
    name = os.path.basename(path)
    s = f'<!-- Generated from book/gen/templates/{name} by book/gen/gen.py: edit the template. -->\n' + s
    open(ROOT + '/book/src/' + os.path.basename(path), 'w').write(s)
unused = set(v) - used
print('unused:', sorted(unused))
