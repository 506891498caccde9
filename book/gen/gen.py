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
import glob, json, os, re, shlex, shutil, signal, subprocess, sys, tempfile, time
import urllib.request

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


def viz_traces(v):
    """The visualizer's guided tours embedded in the chapters (book/gen/tours.py
    defines them): writes book/src/tours/NAME.js and book/src/traces/NAME.rtrace,
    and the chapter text that embeds each (the command, the frame, a note)."""
    sys.path.insert(0, GEN)
    import tours
    for d in ('traces', 'tours'):
        for old in glob.glob(os.path.join(ROOT, 'book', 'src', d, '*')):
            os.remove(old)
    for name, (cmd, tour) in tours.write_tours(run, C, ROOT).items():
        src = f'viz/index.html?tour=../tours/{name}.js'
        n = len(tour['stops'])
        v[f'viz-{name}'] = (
            f'```sh\n{cmd}\n```\n\n'
            f'<iframe class="viz" src="{src}" title="a guided tour: {tour["title"]}" loading="lazy"></iframe>\n\n'
            f'*A guided tour of {tour["title"]}, in {n} stops. Press `]` (or Enter, or **next**) to play on '
            f'to the next stop, `[` to go back, `g` for the legend, `?` for every key. '
            f'[Open it alone](viz/index.html?tour=../tours/{name}.js), or replay the whole trace: '
            f'`cdsctl viz book/src/traces/{name}.rtrace`.*')


if '--viz-only' in sys.argv:
    # CI: write the visualizer's traces (not kept in git) and check that the
    # chapters embedding them were generated from the same runs.
    v = {}
    try:
        viz_traces(v)
    except (RuntimeError, StopIteration, ValueError, KeyError) as e:
        sys.exit(f'visualizer tours: {e}')
    chapters = [open(f).read() for f in glob.glob(os.path.join(ROOT, 'book', 'src', '*.md'))]
    stale = [k for k, text in v.items() if not any(text in c for c in chapters)]
    if stale:
        sys.exit(f'book/src is stale for {stale}: run python3 book/gen/gen.py')
    shutil.rmtree(W, ignore_errors=True)
    print(f'{len(v)} visualizer tours written to book/src/tours')
    sys.exit(0)

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
v['sim-quiesce'] = sim('--nodes', '5', '--seeds', '1-500', '--steps', '5000', '--faults', 'all',
                       '--quiesce')
v['sim-groups'] = sim('--nodes', '5', '--seeds', '1-20', '--steps', '5000', '--faults', 'all',
                      '--groups', '64', '--quiesce')

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

# ---------------------------------------------------------------- real clusters
class LocalCluster:
    """A local cluster of `cdsctl node` processes in W/NAME, shown in the
    book as SHOWN_AS. Every method builds a transcript or reads what the
    nodes report; `stop` always tears it down (`kv down`, then SIGKILL to
    any pid of ours still alive) and removes its data."""

    def __init__(self, name, shown_as):
        self.d = os.path.join(W, name)
        self.shown_as = shown_as
        self.pids = set()

    def shown(self, s):
        return s.replace(os.path.realpath(self.d), self.shown_as).replace(self.d, self.shown_as)

    def cluster(self):
        try:
            return json.load(open(os.path.join(self.d, 'cluster.json')))
        except (OSError, ValueError):
            return {'nodes': []}

    def remember(self):
        self.pids.update(n['pid'] for n in self.cluster()['nodes'] if n.get('pid'))

    def kv(self, *a, ok=(0,)):
        p = subprocess.run([C, 'kv', *a, '--dir', self.d], cwd=ROOT, capture_output=True, text=True)
        self.remember()
        out = (p.stdout + p.stderr).rstrip('\n')
        if p.returncode not in ok:
            raise RuntimeError(f'FAILED cdsctl kv {" ".join(a)}: rc={p.returncode}\n{out}')
        return f'$ target/release/cdsctl kv {shlex.join(a)} --dir {self.shown_as}\n{self.shown(out)}'

    def http(self, i):
        return next(n['http_addr'] for n in self.cluster()['nodes'] if n['id'] == i)

    def curl(self, *a, grep=None):
        # What the node's guard asks of a request (cds/src/kv/http.rs): the
        # admin token on /admin/*, a JSON content type on admin and CAS
        # bodies. The book shows the token as $ADMIN_TOKEN, never its value.
        url = next((x for x in a if x.startswith('http')), '')
        path = url.split('?')[0]
        real, shown = [], []
        if '/admin/' in path:
            token = self.cluster()['admin_token']
            real += ['-H', f'Authorization: Bearer {token}']
            shown.append('-H "Authorization: Bearer $ADMIN_TOKEN"')
        if '--data-binary' in a and ('/admin/' in path or path.endswith('/cas')):
            real += ['-H', 'Content-Type: application/json']
            shown.append("-H 'Content-Type: application/json'")
        p = subprocess.run(['curl', '-s', *real, *a], capture_output=True, text=True, timeout=20)
        if p.returncode != 0:
            raise RuntimeError(f'FAILED curl {a}: rc={p.returncode}\n{p.stdout}{p.stderr}')
        # The Date header changes with every request.
        lines = [l for l in p.stdout.replace('\r', '').rstrip('\n').split('\n')
                 if not l.lower().startswith('date:')]
        cmd = ' '.join(['$ curl -s', *shown, shlex.join(a)])
        if grep:
            lines = [l for l in lines if re.search(grep, l)]
            cmd += f" | grep -E '{grep}'"
        return cmd + '\n' + '\n'.join(lines)

    def status(self, i):
        try:
            with urllib.request.urlopen(f'http://{self.http(i)}/status', timeout=1) as r:
                return json.load(r)
        except (OSError, ValueError, StopIteration):
            return None

    def wait(self, what, cond, secs=20):
        end = time.time() + secs
        while time.time() < end:
            got = cond({n['id']: self.status(n['id']) for n in self.cluster()['nodes']})
            if got:
                return got
            time.sleep(0.2)
        raise RuntimeError(f'timed out waiting for {what}')

    def stop(self):
        if os.path.exists(os.path.join(self.d, 'cluster.json')):
            subprocess.run([C, 'kv', 'down', '--dir', self.d, '--timeout', '5s'], cwd=ROOT,
                           capture_output=True, timeout=60)
        self.remember()
        for pid in self.pids:
            try:
                cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
            except OSError:
                continue
            if b'node' in cmd and self.d.encode() in cmd:
                os.kill(pid, signal.SIGKILL)
        # The nodes' data (a bench alone writes megabytes) is not needed.
        shutil.rmtree(self.d, ignore_errors=True)


def leader_of(sts, among=None):
    """The leader of the highest term among the answering nodes of `sts`."""
    ls = [i for i, s in sts.items() if s and s['role'] == 'leader' and (among is None or i in among)]
    return max(ls, key=lambda i: sts[i]['term']) if ls else None


def settled(expect_up):
    """A `wait` condition: every node of expect_up answers, follows one
    leader and has applied all it knows; returns that leader."""
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
    c = LocalCluster('cds', KV_SHOWN)
    d, cluster, kv, http, curl, status, wait = c.d, c.cluster, c.kv, c.http, c.curl, c.status, c.wait
    shown = c.shown

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
        v['kv-snapshot'] = '\n'.join([kv('snapshot', str(leader)), '',
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
        c.stop()


try:
    kv_chapter(v)
except RuntimeError as e:
    sys.exit(f'cluster chapter: {e}')

# ---------------------------------------------------------------- fault injection
# The chapter "Fault injection" (templates/faults.md) breaks a real cluster in
# every way `cdsctl kv` offers, in a temporary directory shown as /tmp/faults,
# and reads what Raft did from the nodes' status, metrics, logs and traces.
# Like the cluster chapter, the commands are built from what the cluster
# reports (which node leads is up to the elections), the numbers change from
# run to run, and the cluster is always stopped at the end. The run is checked
# for what the chapter describes (a CheckQuorum step-down of the cut-off
# leader, a snapshot install on the node that joins a compacted cluster);
# when a check fails, read the new run and update templates/faults.md.
FAULTS_SHOWN = '/tmp/faults'


def faults_chapter(v):
    import shlex, signal, time, urllib.request
    c = LocalCluster('faults', FAULTS_SHOWN)
    d, cluster, kv, http, curl, status, wait = c.d, c.cluster, c.kv, c.http, c.curl, c.status, c.wait
    shown = c.shown

    def metric(i, name):
        with urllib.request.urlopen(f'http://{http(i)}/metrics', timeout=2) as r:
            for l in r.read().decode().split('\n'):
                if l.startswith(name + ' '):
                    return float(l.split()[1])
        raise RuntimeError(f'node {i} has no metric {name}')

    def now_us():
        # The nodes stamp their trace records with wall-clock microseconds.
        return int(time.time() * 1e6)

    def trace_lines(i, since):
        path = os.path.join(d, f'n{i}', 'trace.rtrace')
        lines = open(path).read().rstrip('\n').split('\n')
        return [l for l in lines[1:] if l and json.loads(l)['t'] >= since]

    def trace_tail(i, since, until=None):
        # Node i's trace records since `since` (its trace is flushed every tick),
        # shown as the `tail -n K` that prints them at that moment.
        time.sleep(0.2)
        got = trace_lines(i, since)
        if not got:
            raise RuntimeError(f'node {i} traced nothing since {since}')
        shown_lines = got if until is None else got[:until]
        return (f'$ tail -n {len(got)} {FAULTS_SHOWN}/n{i}/trace.rtrace\n' + '\n'.join(shown_lines)
                + ('\n...' if len(shown_lines) < len(got) else ''))

    try:
        v['fault-up'] = kv('up', '--nodes', '3')
        ids = [n['id'] for n in cluster()['nodes']]
        leader = wait('a settled cluster', settled(ids))

        # SIGKILL the leader; the others elect a new one; restart it.
        killed = leader
        v['fault-killed'] = str(killed)
        kill_t = now_us()
        v['fault-kill'] = '\n'.join([kv('kill', str(killed)), kv('status')])
        others = [i for i in ids if i != killed]
        leader = wait('a new leader', settled(others))
        v['fault-kill-leader'] = str(leader)
        v['fault-kill-after'] = '\n'.join([kv('put', 'after-kill', 'yes'), kv('status')])
        v['fault-restart'] = kv('restart', str(killed))
        leader = wait('the restarted node to catch up', settled(ids))
        v['fault-restart-status'] = kv('status')

        # SIGSTOP the leader, then SIGCONT.
        paused = leader
        v['fault-paused'] = str(paused)
        v['fault-pause'] = '\n'.join([kv('pause', str(paused)), kv('status')])
        others = [i for i in ids if i != paused]
        leader = wait('a leader while one is paused', settled(others))
        v['fault-pause-leader'] = str(leader)
        v['fault-pause-after'] = '\n'.join([kv('put', 'during-pause', 'yes'), kv('status')])
        resume_t = now_us()
        v['fault-resume'] = kv('resume', str(paused))
        leader = wait('the resumed node to follow', settled(ids))
        v['fault-resume-status'] = kv('status')
        v['fault-resume-trace'] = trace_tail(paused, resume_t)
        after_resume = [json.loads(l) for l in trace_lines(paused, resume_t)]
        first = after_resume[0]
        if any(r['ev'] == 'timeout' for r in after_resume):
            v['fault-resume-after'] = (
                'After stepping down, the node timed out at once and became a pre-candidate (`timeout`, '
                'microseconds apart). The node loop handles the messages that queued up during the pause '
                'after its first catch-up tick, not after the last one. So it learned of the new leader '
                'with ticks still to catch up on, and those ran down its election timer before the next '
                'heartbeat could arrive. PreVote makes this harmless: a pre-vote round does not raise the '
                'term, and the next heartbeat made the node a follower again.')
        else:
            v['fault-resume-after'] = ''
        if first['ev'] == 'stepdown':
            v['fault-resume-why'] = ('In this run CheckQuorum came first: catching up on the ticks it missed, '
                                     'the node reached an election-timeout check with no peer heard from since '
                                     'the previous check, and stepped down (`stepdown`, `check_quorum`)')
        else:
            v['fault-resume-why'] = ('In this run a message of the newer term came first: the node took the new '
                                     'term (`persist`) and went from `leader` to `follower`, before CheckQuorum '
                                     'fired')

        # Cut the leader off from the other two.
        iso = leader
        rest = [i for i in ids if i != iso]
        v['fault-isolated'] = str(iso)
        spec = f'{iso}/' + ','.join(map(str, rest))
        v['fault-partition-spec'] = spec
        out = [kv('put', 'color', 'blue')]
        part_t = now_us()
        out.append(kv('partition', spec))
        logs = []
        for i in ids:
            logs += [l for l in open(os.path.join(d, f'n{i}', 'log')).read().split('\n') if 'fault filter' in l]
        v['fault-partition'] = '\n'.join([*out, f"$ grep -h 'fault filter' {FAULTS_SHOWN}/n*/log", *logs])
        leader = wait('a leader in the majority', settled(rest))
        v['fault-partition-leader'] = str(leader)
        wait('the isolated leader to step down', lambda sts: sts.get(iso) and sts[iso]['role'] != 'leader')
        time.sleep(0.3)
        lines = trace_lines(iso, part_t)
        cut = next((k for k, l in enumerate(lines) if '"ev":"stepdown"' in l and 'check_quorum' in l), None)
        if cut is None:
            raise RuntimeError(f'node {iso} stepped down without a check_quorum record: {lines}')
        v['fault-partition-trace'] = trace_tail(iso, part_t, until=cut + 3)
        ih = http(iso)
        v['fault-partition-ops'] = '\n'.join([
            kv('put', 'color', 'red'),
            kv('status'),
            curl(f'http://{ih}/kv/color?consistency=stale'),
            curl('-i', f'http://{ih}/kv/color'),
            curl(f'http://{ih}/metrics', grep='^cds_transport_(sent|received|dropped_filter)_total'),
        ])
        v['fault-heal'] = kv('heal')
        leader = wait('the healed cluster to settle', settled(ids))
        v['fault-heal-status'] = '\n'.join([kv('status'), kv('get', 'color', '--consistency', 'stale')])

        # A slow link: hold everything the leader sends to its followers.
        followers = [i for i in ids if i != leader]
        lh = http(leader)

        def timed_put(val):
            t0 = time.time()
            out = kv('put', 'tone', val)
            return out, (time.time() - t0) * 1000

        _, before_ms = timed_put('low')
        body = json.dumps({'delay_to_ms': {str(f): 150 for f in followers}})
        out = [curl('-X', 'POST', '--data-binary', body, f'http://{lh}/admin/filter')]
        put_out, during_ms = timed_put('high')
        out.append(put_out)
        if during_ms < 150:
            raise RuntimeError(f'a put through 150 ms links took {during_ms:.0f} ms')
        out.append(curl('-X', 'POST', '--data-binary', '{"delay_to": {"%d": 150}}' % followers[0],
                        f'http://{lh}/admin/filter'))
        out.append(curl('-X', 'POST', '--data-binary', '{}', f'http://{lh}/admin/filter'))
        v['fault-delay'] = '\n'.join(out)
        v['fault-delay-leader'] = str(leader)
        v['fault-delay-before'] = f'{before_ms:.0f}'
        v['fault-delay-during'] = f'{during_ms:.0f}'

        # A partition does not survive a restart of the node that holds it:
        # cut a follower off, kill and restart it.
        f = min(i for i in ids if i != leader)
        v['fault-rp-node'] = str(f)
        fspec = f'{f}/' + ','.join(str(i) for i in ids if i != f)
        out = [kv('partition', fspec), kv('kill', str(f)), kv('restart', str(f))]
        time.sleep(2.5)
        out += [kv('status'),
                curl(f'http://{http(f)}/metrics', grep='^cds_transport_dropped_filter_total'),
                curl(f'http://{http(leader)}/metrics', grep='^cds_transport_dropped_filter_total')]
        if metric(f, 'cds_transport_dropped_filter_total') != 0 or metric(
                leader, 'cds_transport_dropped_filter_total') == 0:
            raise RuntimeError('the restarted node is not unfiltered while the leader still filters')
        s = status(f)
        if s is None or s['leader'] is not None:
            raise RuntimeError(f'the restarted node {f} found a leader through the partition: {s}')
        v['fault-restart-partition'] = '\n'.join(out)
        v['fault-rp-heal'] = kv('heal')
        leader = wait('the cluster to settle after the second heal', settled(ids))

        # Leadership on request.
        target = min(i for i in ids if i != leader)
        v['fault-transfer-from'] = str(leader)
        v['fault-transfer-to'] = str(target)
        tr_t = now_us()
        out = kv('transfer-leader', str(target))
        time.sleep(0.3)
        tl = [f'{FAULTS_SHOWN}/n{i}/trace.rtrace:' + l for i in ids for l in trace_lines(i, tr_t)
              if '"ev":"transfer"' in l]
        v['fault-transfer'] = '\n'.join([out, f"$ grep '\"ev\":\"transfer\"' {FAULTS_SHOWN}/n*/trace.rtrace", *tl])
        leader = wait('the cluster to settle after the transfer', settled(ids))

        # Compact every member's log, then add a node: it must install a snapshot.
        lh = http(leader)
        out = [kv('bench', '--clients', '4', '--duration', '1s', '--value-size', '64')]
        out += [kv('snapshot', str(i)) for i in ids]
        out += [curl(f'http://{lh}/metrics', grep='^cds_(log_first_index|log_last_index|snapshot_index) ')]
        v['fault-snapshot'] = '\n'.join(out)
        add = kv('add-node')
        ids = [n['id'] for n in cluster()['nodes']]
        new = max(ids)
        v['fault-new'] = str(new)
        wait('the new node to catch up', settled(ids))
        if metric(new, 'cds_snapshots_installed_total') < 1:
            raise RuntimeError(f'node {new} joined without installing a snapshot')
        snaps = [l for l in open(os.path.join(d, f'n{new}', 'trace.rtrace')).read().split('\n')
                 if '"ev":"snapshot"' in l]
        v['fault-add'] = '\n'.join([
            add,
            curl(f'http://{http(new)}/metrics',
                 grep='^cds_(snapshots_installed_total|snapshot_index|log_first_index|applied_index) '),
            f"$ grep '\"ev\":\"snapshot\"' {FAULTS_SHOWN}/n{new}/trace.rtrace",
            *snaps,
        ])
        v['fault-remove'] = '\n'.join([kv('remove-node', str(new)), kv('status')])

        # Stop, then merge and check the nodes' traces.
        v['fault-down'] = kv('down')
        merge = run([C, 'trace', 'merge', d, '-o', 'merged.rtrace'], cwd=W)
        check = run([C, 'trace', 'check', 'merged.rtrace'], cwd=W)
        v['fault-merge'] = (f'$ target/release/cdsctl trace merge {FAULTS_SHOWN} -o merged.rtrace\n{shown(merge)}\n'
                            f'$ target/release/cdsctl trace check merged.rtrace\n{check}')
        merged = open(os.path.join(W, 'merged.rtrace')).read().rstrip('\n').split('\n')[1:]
        after = [l for l in merged if json.loads(l)['t'] >= kill_t]
        end = next((k for k, l in enumerate(after) if json.loads(l)['ev'] == 'role'
                    and json.loads(l)['role'] == 'leader'), None)
        if end is None:
            raise RuntimeError('no election after the kill in the merged trace')
        sel = after[:end + 1]
        recs = [json.loads(l) for l in sel]
        timeouts = [r for r in recs if r['ev'] == 'timeout']
        if len(timeouts) == 1:
            v['fault-merge-story'] = (
                "A survivor's election timeout fires, and it becomes a pre-candidate. The other survivor "
                'grants the pre-vote. The pre-candidate then persists the new term and its own vote and '
                'becomes a candidate. The other survivor persists its vote and grants it, and the candidate '
                'becomes leader')
        elif any(r['ev'] == 'vote' and not r['pre_vote'] and not r['granted'] for r in recs):
            v['fault-merge-story'] = (
                "In this run the survivors' election timeouts fired close together. Both became "
                'pre-candidates, both got the pre-vote, and both became candidates in the same term. Each had '
                'voted for itself, so each refused the other (`"granted":false`) and neither won: a split '
                'vote. Election timeouts are randomized (10 to 20 ticks), so in the next round one node timed '
                f"out first, and it won in term {recs[end]['term']}")
        elif (len(timeouts) == 2 and timeouts[0]['node'] != timeouts[1]['node']
              and recs[end]['node'] == timeouts[1]['node']):
            v['fault-merge-story'] = (
                f"In this run node {timeouts[0]['node']}'s timer fired first and it became a pre-candidate, but "
                f"node {timeouts[1]['node']} had heard from the old leader less than an election timeout before, "
                'so it ignored the pre-vote request: a follower that still hears a leader does not help anyone '
                f"replace it. When node {timeouts[1]['node']}'s own timer fired it became a pre-candidate in turn, "
                f"got the pre-vote, persisted term {recs[end]['term']} and its vote, and won")
        else:
            raise RuntimeError(f'an election after the kill that the chapter does not describe: {sel}')
        # The other survivor learning the new leader, if it is next.
        if end + 1 < len(after) and '"ev":"role"' in after[end + 1]:
            sel.append(after[end + 1])
        v['fault-merge-election'] = '\n'.join(sel)
    finally:
        c.stop()


try:
    faults_chapter(v)
except RuntimeError as e:
    sys.exit(f'fault chapter: {e}')


try:
    viz_traces(v)
except (RuntimeError, StopIteration, ValueError) as e:
    sys.exit(f'visualizer tours: {e}')

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
shutil.rmtree(W, ignore_errors=True)
