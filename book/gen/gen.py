#!/usr/bin/env python3
"""Regenerates the book's chapters from book/gen/templates/*.md.

Every `@@name@@` placeholder in a template is replaced by the real output of
the command that produces it, so what the book shows is what the code does.
Edit the templates (and snippets/), never book/src/<chapter>.md directly, then
run from the repository root:

    python3 book/gen/gen.py

It builds cdsctl twice (plain, and with the bug-injection feature) and the
simulator test binary. Timings ("steps/s", "in 0.3s") differ from run to run.
The cluster chapter starts real node processes in a temporary directory (and
always stops them again); its ports, pids, leaders and bench numbers differ
from run to run too.

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

# ---------------------------------------------------------------- a local cluster
# The chapter "Running a local cluster" (templates/cluster.md) shows a real
# cluster of `cdsctl node` processes, started in a temporary directory and
# shown as /tmp/cds. Which node leads is decided by the election, so the
# commands are built from what the cluster reports, and each placeholder is a
# transcript: the command after `$ `, then its output. Ports, pids, terms,
# indexes and the bench numbers change from run to run. Whatever happens,
# the cluster is stopped at the end (`kv down`, then SIGKILL to any pid of
# ours still alive).
KV_SHOWN = '/tmp/cds'


def kv_chapter(v):
    import shlex, signal, time, urllib.request
    d = os.path.join(W, 'cds')
    pids = set()

    def shown(s):
        return s.replace(os.path.realpath(d), KV_SHOWN).replace(d, KV_SHOWN)

    def cluster():
        try:
            return json.load(open(os.path.join(d, 'cluster.json')))
        except (OSError, ValueError):
            return {'nodes': []}

    def remember():
        pids.update(n['pid'] for n in cluster()['nodes'] if n.get('pid'))

    def kv(*a, ok=(0,)):
        p = subprocess.run([C, 'kv', *a, '--dir', d], cwd=ROOT, capture_output=True, text=True)
        remember()
        out = (p.stdout + p.stderr).rstrip('\n')
        if p.returncode not in ok:
            raise RuntimeError(f'FAILED cdsctl kv {" ".join(a)}: rc={p.returncode}\n{out}')
        return f'$ target/release/cdsctl kv {shlex.join(a)} --dir {KV_SHOWN}\n{shown(out)}'

    def http(i):
        return next(n['http_addr'] for n in cluster()['nodes'] if n['id'] == i)

    def curl(*a):
        p = subprocess.run(['curl', '-s', *a], capture_output=True, text=True, timeout=20)
        if p.returncode != 0:
            raise RuntimeError(f'FAILED curl {a}: rc={p.returncode}\n{p.stdout}{p.stderr}')
        # The Date header changes with every request.
        out = '\n'.join(l for l in p.stdout.replace('\r', '').rstrip('\n').split('\n')
                        if not l.lower().startswith('date:'))
        return f'$ curl -s {shlex.join(a)}\n{out}'

    def status(i):
        try:
            with urllib.request.urlopen(f'http://{http(i)}/status', timeout=1) as r:
                return json.load(r)
        except (OSError, ValueError, StopIteration):
            return None

    def wait(what, cond, secs=20):
        end = time.time() + secs
        while time.time() < end:
            sts = {n['id']: status(n['id']) for n in cluster()['nodes']}
            got = cond(sts)
            if got:
                return got
            time.sleep(0.2)
        raise RuntimeError(f'timed out waiting for {what}')

    def leader_of(sts, among=None):
        ls = [i for i, s in sts.items() if s and s['role'] == 'leader' and (among is None or i in among)]
        return max(ls, key=lambda i: sts[i]['term']) if ls else None

    def settled(expect_up):
        # Every running node follows one leader and has applied all it knows.
        def cond(sts):
            up = {i: s for i, s in sts.items() if i in expect_up}
            if any(s is None for s in up.values()):
                return None
            l = leader_of(up)
            if l is None:
                return None
            if all(s['leader'] == l and s['term'] == up[l]['term'] and s['applied'] == up[l]['commit']
                   for s in up.values()):
                return l
            return None
        return cond

    try:
        v['kv-up'] = kv('up', '--nodes', '3')
        ids = [n['id'] for n in cluster()['nodes']]
        leader = wait('a settled cluster', settled(ids))
        v['kv-status'] = kv('status')
        v['kv-ops'] = '\n'.join([
            kv('put', 'greeting', 'hello'),
            kv('get', 'greeting'),
            kv('get', 'greeting', '--consistency', 'lease'),
            kv('get', 'greeting', '--consistency', 'stale'),
            kv('del', 'greeting'),
            kv('del', 'greeting'),
            kv('get', 'greeting', ok=(1,)),
            kv('put', 'greeting', 'hello again'),
        ])
        follower = min(i for i in ids if i != leader)
        v['kv-follower'] = str(follower)
        fh, lh = http(follower), http(leader)
        v['kv-follower-http'] = fh
        v['kv-redirect'] = '\n'.join([
            curl('-i', '-X', 'PUT', '--data-binary', 'world', f'http://{fh}/kv/hello'),
            '', curl('-L', '-X', 'PUT', '--data-binary', 'world', f'http://{fh}/kv/hello'),
            curl(f'http://{fh}/kv/hello?consistency=stale'),
            curl('-X', 'POST', '--data-binary', '{"expect":"world","value":"there"}', '-L',
                 f'http://{fh}/kv/hello/cas'),
            curl('-X', 'POST', '--data-binary', '{"expect":"world","value":"again"}', '-L',
                 f'http://{fh}/kv/hello/cas'),
        ])
        v['kv-status-json'] = curl(f'http://{fh}/status')
        m = curl(f'http://{lh}/metrics')
        ml = m.split('\n')
        v['kv-metrics'] = '\n'.join([ml[0] + ' | grep -v "^#"'] + [l for l in ml[1:] if not l.startswith('#')])
        v['kv-snapshot'] = '\n'.join([kv('snapshot', str(leader), ok=(1,)), '',
                                      curl('-i', '-X', 'POST', f'http://{lh}/admin/snapshot')])

        # A crash: SIGKILL the leader, read through the election, restart it.
        old = leader
        v['kv-crashed'] = str(old)
        v['kv-kill'] = '\n'.join([kv('kill', str(old)), kv('get', 'greeting')])
        others = [i for i in ids if i != old]
        leader = wait('a new leader', settled(others))
        v['kv-new-leader'] = str(leader)
        v['kv-kill-status'] = '\n'.join([kv('put', 'after-crash', 'yes'), kv('status')])
        v['kv-restart'] = kv('restart', str(old))
        leader = wait('the restarted node to catch up', settled(ids))
        v['kv-restart-status'] = '\n'.join([kv('get', 'after-crash', '--consistency', 'stale'), kv('status')])

        # A pause: SIGSTOP the leader (a long GC pause), then SIGCONT.
        paused = leader
        v['kv-paused'] = str(paused)
        v['kv-pause'] = '\n'.join([kv('pause', str(paused)), kv('put', 'during-pause', 'yes'), kv('status')])
        v['kv-resume'] = kv('resume', str(paused))
        leader = wait('the resumed node to follow', settled(ids))
        v['kv-resume-status'] = kv('status')

        # A partition that isolates the leader.
        iso = leader
        rest = [i for i in ids if i != iso]
        v['kv-isolated'] = str(iso)
        spec = f'{iso}/' + ','.join(map(str, rest))
        v['kv-partition-spec'] = spec
        v['kv-partition'] = '\n'.join([kv('put', 'color', 'blue'), kv('partition', spec)])
        leader = wait('a leader in the majority', settled(rest))

        def iso_deposed(sts):
            s = sts.get(iso)
            return s is not None and s['role'] != 'leader'
        wait('the isolated leader to step down', iso_deposed)
        v['kv-partition-leader'] = str(leader)
        ih = http(iso)
        v['kv-partition-ops'] = '\n'.join([
            kv('put', 'color', 'red'),
            kv('status'),
            curl(f'http://{ih}/kv/color?consistency=stale'),
            curl('-i', f'http://{ih}/kv/color'),
        ])
        v['kv-heal'] = kv('heal')
        leader = wait('the healed cluster to settle', settled(ids))
        v['kv-heal-status'] = '\n'.join([kv('status'), kv('get', 'color', '--consistency', 'stale')])

        # Leadership on request, and membership changes.
        target = min(i for i in ids if i != leader)
        v['kv-transfer'] = kv('transfer-leader', str(target))
        leader = target
        v['kv-add'] = '\n'.join([kv('add-node'), kv('status')])
        ids = [n['id'] for n in cluster()['nodes']]
        new = max(ids)
        wait('the new node to catch up', settled(ids))
        v['kv-remove'] = '\n'.join([kv('remove-node', str(new)), kv('status')])
        ids = [n['id'] for n in cluster()['nodes']]

        v['kv-bench'] = kv('bench', '--clients', '16', '--duration', '5s')
        v['kv-down'] = '\n'.join([kv('down'), kv('status')])
        found = subprocess.run(['find', d, '-type', 'f'], capture_output=True, text=True, check=True)
        v['kv-files'] = f'$ find {KV_SHOWN} -type f | sort\n' + shown('\n'.join(sorted(found.stdout.split())))
        v['kv-cluster-json'] = f'$ cat {KV_SHOWN}/cluster.json\n' + shown(
            open(os.path.join(d, 'cluster.json')).read().rstrip('\n'))
        v['kv-config-json'] = f'$ cat {KV_SHOWN}/n1/config.json\n' + shown(
            open(os.path.join(d, 'n1', 'config.json')).read().rstrip('\n'))
        v['kv-log'] = f'$ tail -n 5 {KV_SHOWN}/n{iso}/log\n' + shown('\n'.join(
            open(os.path.join(d, f'n{iso}', 'log')).read().rstrip('\n').split('\n')[-5:]))
    finally:
        if os.path.exists(os.path.join(d, 'cluster.json')):
            subprocess.run([C, 'kv', 'down', '--dir', d, '--timeout', '5s'], cwd=ROOT,
                           capture_output=True, timeout=60)
        remember()
        for pid in pids:
            try:
                cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
            except OSError:
                continue
            if b'node' in cmd and d.encode() in cmd:
                os.kill(pid, signal.SIGKILL)
        # The nodes' data (the bench alone writes megabytes) is not needed.
        shutil.rmtree(d, ignore_errors=True)


try:
    kv_chapter(v)
except RuntimeError as e:
    sys.exit(f'cluster chapter: {e}')

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
