"""Guided tours of the visualizer, one per Raft mechanism the book explains.

A tour is a simulator trace plus stops: the number of events applied (as
in `?at=`), a caption, and what to look at. Each tour below says which
`cdsctl raft sim` command makes its trace, how to recognise the run that
shows its phenomenon (the first seed that does), and how to find each stop
in that run. `write_tours` runs them and writes book/src/tours/NAME.js
(a script calling `vizTour({...})` with the trace inside, so that the book
works when opened from disk) and book/src/traces/NAME.rtrace beside it.

The captions are written from the events the finders matched, so they name
the run's real nodes and terms; when a run no longer shows a stop, the
finder raises and gen.py stops with the tour's name.
"""
import json
import os


class Missing(Exception):
    """A run does not show what a tour needs."""


def first(recs, pred, start=0, end=None):
    """Index of the first record at or after `start` matching `pred`."""
    for i in range(start, len(recs) if end is None else min(end, len(recs))):
        if pred(recs[i]):
            return i
    raise Missing('no such event')


def last_before(recs, pred, end):
    for i in range(end - 1, -1, -1):
        if pred(recs[i]):
            return i
    raise Missing('no such event before')


def stop(i, caption, look=''):
    """A stop showing the view right after event `i` (-1: before any)."""
    return {'at': i + 1, 'caption': caption, 'look': look}


def settle(recs, i):
    """The last event of the burst event `i` starts (the same node at the same
    time): a timeout's stop should show the requests it sent on their way."""
    while i + 1 < len(recs) and recs[i + 1]['node'] == recs[i]['node'] and recs[i + 1]['t'] == recs[i]['t']:
        i += 1
    return i


def leader_at(recs, end):
    leader = None
    for r in recs[:end]:
        if r['ev'] == 'role':
            if r['role'] == 'leader':
                leader = r['node']
            elif r['node'] == leader:
                leader = None
    return leader


# ----- the tours ------------------------------------------------------------

def election(recs):
    t = first(recs, lambda r: r['ev'] == 'timeout' and r['pre_vote'])
    c = recs[t]['node']
    pv = first(recs, lambda r: r['ev'] == 'vote' and r['pre_vote'] and r['granted'] and r['candidate'] == c, t)
    cand = first(recs, lambda r: r['ev'] == 'role' and r['role'] == 'candidate' and r['node'] == c, t)
    term = recs[cand]['term']
    v = first(recs, lambda r: r['ev'] == 'vote' and not r['pre_vote'] and r['granted'] and r['candidate'] == c, cand)
    voter = recs[v]['node']
    won = first(recs, lambda r: r['ev'] == 'role' and r['role'] == 'leader' and r['node'] == c, cand)
    com = first(recs, lambda r: r['ev'] == 'commit' and r['node'] == c, won)
    return [
        stop(-1, 'Three nodes start as followers in term 0, and nobody leads. Each runs an election timer, '
             'randomized so that they rarely fire together.',
             'the blue arc around each node: its timer, emptying as the timeout nears'),
        stop(settle(recs, t), f"n{c}'s timer fires first. Before raising its term it asks the others for pre-votes: "
             f"would they vote for it?", f'n{c} is now a pre-candidate; its requests are the dots leaving it'),
        stop(pv, f'n{recs[pv]["node"]} would vote for n{c}: its log is no further ahead and it has heard '
             f'from no leader. With its own, n{c} has a majority of pre-votes.',
             f'the pre-votes listed under n{c}'),
        stop(settle(recs, cand), f'Only now does n{c} raise its term, to {term}: it becomes a candidate, votes for itself and '
             f'asks for real votes.', f"n{c}'s term and fill colour change"),
        stop(v, f'n{voter} votes for n{c} in term {term}. It saved its vote to disk first, so even a crash '
             f'cannot make it vote twice in one term.', f'n{voter} has moved to term {term} too'),
        stop(won, f'Two votes of three: n{c} is the leader of term {term}. It appends an entry of its own term '
             f'and sends heartbeats so that nobody else times out.', f'n{c} in green; the other timers restart'),
        stop(com, f'The leader\'s first entry is on a majority: committed. Now it can answer clients.',
             'the log rows: a black underline marks committed entries'),
    ]


def replication(recs):
    i = first(recs, lambda r: r['ev'] == 'client' and r['dir'] == 'request' and r['op'] == 'put'
              and r['role'] == 'leader')
    lead = recs[i]['node']
    c = recs[i]['client']
    app = first(recs, lambda r: r['ev'] == 'append' and r['node'] == lead, i)
    idx = recs[app]['last']
    snd = first(recs, lambda r: r['ev'] == 'send' and r['node'] == lead and r['m']['type'] == 'append'
                and r['m']['entries'] > 0 and r['m']['last'] >= idx, i)
    f = recs[snd]['to']
    fa = first(recs, lambda r: r['ev'] == 'append' and r['node'] != lead and r['last'] >= idx, snd)
    fol = recs[fa]['node']
    ack = first(recs, lambda r: r['ev'] == 'send' and r['node'] == fol and r['m']['type'] == 'append_resp'
                and r['m']['success'] and r['m']['index'] >= idx, fa)
    com = first(recs, lambda r: r['ev'] == 'commit' and r['node'] == lead and r['index'] >= idx, ack)
    rep = first(recs, lambda r: r['ev'] == 'client' and r['dir'] == 'reply' and r['client'] == c
                and r['node'] == lead, com)
    fc = first(recs, lambda r: r['ev'] == 'commit' and r['node'] != lead and r['index'] >= idx, com)
    return [
        stop(i, f'Client c{c} sends a put to the leader, n{lead}.', 'the line under the cluster tells each event'),
        stop(max(app, settle(recs, snd)), f'n{lead} appends the write as entry {idx} of its log and sends it to n{f} in '
             f'an append message, without waiting for its own disk: a leader may, because it counts itself toward '
             f'a majority only for entries it has made durable. The message also names the entry just before it, '
             f'so n{f} can check that its log matches up to there.',
             'click the moving dot: the details panel describes the message'),
        stop(fa, f'n{fol} writes entry {idx} to its disk. Only now may it acknowledge it.',
             f"n{fol}'s log row"),
        stop(ack, f'n{fol} tells the leader its log matches up to index {recs[ack]["m"]["index"]}.',
             'the hollow dot is the reply'),
        stop(com, f'The leader and n{fol} hold entry {idx}: a majority of three. The entry is committed and '
             f'can never be lost.', f'the black underline under entry {idx} in n{lead}\'s row'),
        stop(rep, f'n{lead} applied the write to its key-value map and answers client c{c}: ok.',
             'the ✓ on applied entries'),
        stop(fc, f'n{recs[fc]["node"]} learns the new commit index with the next append or heartbeat, '
             f'and applies the entry too.', 'every row now underlines the entry'),
    ]


def partitioned_leader(recs):
    for i, r in enumerate(recs):
        if r['ev'] != 'partition':
            continue
        lead = leader_at(recs, i)
        if lead is None:
            continue
        cut = {b for a, b in r['blocked'] if a == lead}
        others = {x for x in range(1, 6) if x != lead}
        if not others <= cut:
            continue
        try:
            heal = first(recs, lambda x: x['ev'] == 'heal', i)
        except Missing:
            heal = len(recs)
        try:
            down = first(recs, lambda x: x['ev'] == 'stepdown' and x['node'] == lead, i, heal)
        except Missing:
            continue
        term = recs[i]['term'] if recs[i]['node'] == lead else None
        lost = first(recs, lambda x: x['ev'] == 'drop' and x['node'] == lead and x['reason'] == 'partition', i)
        to = first(recs, lambda x: x['ev'] == 'timeout' and x['node'] != lead, i)
        won = first(recs, lambda x: x['ev'] == 'role' and x['role'] == 'leader' and x['node'] != lead, i)
        new = recs[won]['node']
        stops = [
            stop(i, f'The network cuts the leader, n{lead}, off from every other node. It does not know: '
                 f'it keeps sending heartbeats.', 'the red dashed lines with a cross: cut links'),
            stop(lost, f"n{lead}'s messages are lost on the cut links.", 'the narration line names the loss'),
            stop(to, f'Hearing nothing, n{recs[to]["node"]} times out and asks for pre-votes. The majority '
                 f'side can elect a new leader on its own.', ''),
            stop(won, f'n{new} wins term {recs[won]["term"]} with the votes of the majority side. n{lead} still '
                 f'believes it leads an older term, but it cannot commit anything: no majority hears it.',
                 'two nodes in green, in different terms'),
        ]
        if down < won:
            stops.insert(3, stop(down, f'n{lead} has not heard from a majority for an election timeout: '
                                 f'CheckQuorum makes it step down before a new leader is even elected.', ''))
        else:
            stops.append(stop(down, f'n{lead} has not heard from a majority for an election timeout: '
                              f'CheckQuorum makes it step down. Clients asking it are sent elsewhere.', ''))
        if heal < len(recs):
            stops.append(stop(heal, f'The network heals. n{lead} hears of term {recs[won]["term"]} and '
                              f'follows n{new}; entries it could not commit are replaced.', ''))
        return sorted(stops, key=lambda s: s['at'])
    raise Missing('no partition cutting a leader off until it steps down')


def prevote(recs):
    for i, r in enumerate(recs):
        lead = leader_at(recs, i)
        if not (r['ev'] == 'vote' and r['pre_vote'] and not r['granted'] and lead is not None
                and r['candidate'] != lead and r['node'] != lead):
            continue
        c = r['candidate']
        t = last_before(recs, lambda x: x['ev'] == 'timeout' and x['node'] == c, i)
        term = recs[t]['term']
        stops = []
        try:
            p = last_before(recs, lambda x: x['ev'] == 'partition', t)
            if leader_at(recs, p) == lead:
                stops.append(stop(p, f'A partition cuts n{c} off from the leader, n{lead}.', 'the cut links'))
        except Missing:
            pass
        stops += [
            stop(t, f"n{c} hears no heartbeat and its timer fires. Without PreVote it would raise its term "
                 f"to {term + 1} at once; with PreVote it first asks whether anyone would vote for it.",
                 f'n{c} stays in term {term}'),
            stop(i, f'n{r["node"]} refuses: it still hears from leader n{lead}. n{c} cannot win, so its term '
                 f'does not rise, and when the partition heals it will not force n{lead} to step down.',
                 f'refused pre-votes listed under n{c}'),
        ]
        try:
            nxt = first(recs, lambda x: x['ev'] == 'timeout' and x['node'] == c, i + 1)
            stops.append(stop(nxt, f'n{c} tries again later, still in term {recs[nxt]["term"]}; the leader is '
                              f'undisturbed.', ''))
        except Missing:
            pass
        return stops
    raise Missing('no refused pre-vote while a leader leads')


def transfer(recs):
    i = first(recs, lambda r: r['ev'] == 'transfer' and r['phase'] == 'timeout_now')
    lead, to = recs[i]['node'], recs[i]['to']
    start = last_before(recs, lambda r: r['ev'] == 'transfer' and r['phase'] == 'start' and r['to'] == to, i)
    camp = first(recs, lambda r: r['ev'] == 'role' and r['node'] == to and r['role'] == 'candidate', i)
    won = first(recs, lambda r: r['ev'] == 'role' and r['node'] == to and r['role'] == 'leader', i)
    return [
        stop(start, f'Leader n{lead} begins to hand leadership to n{to}. It stops taking new writes, so '
             f"n{to} can catch up.", ''),
        stop(settle(recs, i), f"n{to}'s log is up to date: n{lead} sends it timeout_now.", 'the message from the leader'),
        stop(camp, f'n{to} campaigns at once, without waiting for its timer and without a pre-vote round. Its '
             f'vote requests say it is a transfer, so voters grant them though they know a leader.', ''),
        stop(won, f'n{to} leads term {recs[won]["term"]}. The hand-over took a round trip or two, instead of an '
             f'election timeout.', ''),
    ]


def joint(recs):
    i = first(recs, lambda r: r['ev'] == 'config' and r['change'] == 'joint_entered' and r['role'] == 'leader')
    lead, idx = recs[i]['node'], recs[i]['index']
    old, new = recs[i]['outgoing'], recs[i]['voters']
    fmt = lambda xs: ', '.join(f'n{x}' for x in xs)
    stops = []
    try:
        la = last_before(recs, lambda r: r['ev'] == 'config' and r['change'] == 'learner_added'
                         and r['role'] == 'leader', i)
        added = [x for x in recs[la]['learners']]
        stops.append(stop(la, f'First the new node joins as a learner ({fmt(added)}): it receives the log but '
                          f'does not vote, so it cannot slow down commits while it catches up.',
                          'the learner badge'))
    except Missing:
        pass
    com = first(recs, lambda r: r['ev'] == 'commit' and r['node'] == lead and r['index'] >= idx, i)
    left = first(recs, lambda r: r['ev'] == 'config' and r['change'] == 'joint_left' and r['node'] == lead, i)
    lidx = recs[left]['index']
    com2 = first(recs, lambda r: r['ev'] == 'commit' and r['role'] == 'leader' and r['index'] >= lidx, left)
    stops += [
        stop(i, f'Leader n{lead} appends entry {idx}: the joint configuration, old voters {fmt(old)} and new '
             f'voters {fmt(new)}. It takes effect as soon as it is appended.',
             'the two voter sets in the top-left corner, and the joining/leaving badges'),
        stop(com, f'Entry {idx} is committed, by a majority of the old voters and a majority of the new. Until '
             f'the change is over, every decision needs both.', ''),
        stop(left, f'n{lead} appends entry {lidx}, the new configuration alone: voters {fmt(recs[left]["voters"])}.',
             'the corner text is gone: no longer joint'),
        stop(com2, f'Entry {lidx} is committed: the change is complete. Nodes outside the new set are removed '
             f'(and a leader outside it steps down).', 'the removed badges'),
    ]
    return stops


def snapshot(recs):
    i = first(recs, lambda r: r['ev'] == 'snapshot' and r['phase'] == 'offered')
    lead, f, idx = recs[i]['node'], recs[i]['peer'], recs[i]['index']
    stops = []
    try:
        cp = last_before(recs, lambda r: r['ev'] == 'compact' and r['node'] == lead, i)
        stops.append(stop(cp, f'Leader n{lead} has saved a snapshot and discarded its log up to entry '
                          f'{recs[cp]["upto"]}: those entries exist only inside the snapshot now.',
                          f"grey cells in n{lead}'s row"))
    except Missing:
        pass
    got = first(recs, lambda r: r['ev'] == 'snapshot' and r['phase'] == 'chunk_received' and r['node'] == f, i)
    inst = first(recs, lambda r: r['ev'] == 'snapshot' and r['phase'] == 'installed' and r['node'] == f, i)
    stops += [
        stop(i, f'n{f} is so far behind that it needs entries n{lead} no longer has. Instead of entries, '
             f'n{lead} offers its snapshot up to index {idx} ({recs[i]["bytes"]} bytes).', ''),
        stop(got, f'n{f} pulls the snapshot in chunks, asking for each; every chunk is checksummed, and a '
             f'damaged one is asked for again.', f'the progress bar under n{f}'),
        stop(inst, f'Every file checked: n{f} installs the snapshot. Its log now starts after index {idx} and '
             f'its state machine is the snapshot\'s.', f"n{f}'s log row: grey up to {idx}"),
    ]
    try:
        nxt = first(recs, lambda r: r['ev'] == 'append' and r['node'] == f, inst)
        stops.append(stop(nxt, f'From here n{f} takes ordinary appends again, after the snapshot.', ''))
    except Missing:
        pass
    return stops


# name: (command flags, seeds, steps, finder, title)
TOURS = {
    'election': (['--nodes', '3', '--faults', 'none', '--clients', '1'], range(1, 20), 300, election,
                 'a first election'),
    'replication': (['--nodes', '3', '--faults', 'none', '--clients', '1'], range(1, 20), 600, replication,
                    'replicating a client write'),
    'partitioned-leader': (['--nodes', '5', '--faults', 'partition', '--clients', '1'], range(1, 200), 3000,
                           partitioned_leader, 'a partitioned leader'),
    'prevote': (['--nodes', '5', '--faults', 'partition', '--clients', '1'], range(1, 200), 3000, prevote,
                'PreVote stopping a disruptive node'),
    'transfer': (['--nodes', '5', '--faults', 'all'], range(1, 200), 5000, transfer, 'a leader transfer'),
    'joint': (['--nodes', '5', '--faults', 'none', '--reconfig'], range(1, 200), 5000, joint,
              'a joint-consensus membership change'),
    'snapshot': (['--nodes', '3', '--faults', 'crash', '--compact'], range(1, 200), 5000, snapshot,
                 'a snapshot install'),
}

# Events kept after a tour's last stop: the story's end, not the whole run.
TAIL = 300


def write_tours(run, cdsctl, root):
    """Writes every tour; returns {name: (command line, tour dict)}.
    `run(args)` runs a command and fails loudly."""
    traces = os.path.join(root, 'book', 'src', 'traces')
    tours = os.path.join(root, 'book', 'src', 'tours')
    os.makedirs(traces, exist_ok=True)
    os.makedirs(tours, exist_ok=True)
    out = {}
    for name, (flags, seeds, steps, finder, title) in TOURS.items():
        for seed in seeds:
            rel = f'book/src/traces/{name}.rtrace'
            args = ['raft', 'sim', *flags, '--seed', str(seed), '--steps', str(steps), '--trace', rel]
            run([cdsctl, *args])
            path = os.path.join(root, rel)
            lines = open(path).read().rstrip('\n').split('\n')
            recs = [json.loads(l) for l in lines[1:]]
            try:
                stops = finder(recs)
            except Missing:
                continue
            ats = [s['at'] for s in stops]
            if ats != sorted(set(ats)):
                raise RuntimeError(f'{name} tour, seed {seed}: stops out of order {ats}')
            # A prefix of a valid trace is a valid trace.
            end = min(len(recs), max(s['at'] for s in stops) + TAIL)
            text = '\n'.join(lines[:1 + end]) + '\n'
            open(path, 'w').write(text)
            cmd = 'target/release/cdsctl ' + ' '.join(args)
            tour = {'name': name, 'title': title, 'command': cmd, 'trace': text, 'stops': stops}
            with open(os.path.join(tours, f'{name}.js'), 'w') as f:
                f.write('// A guided tour for the cds-raft visualizer, written by book/gen/tours.py.\n')
                f.write(f'vizTour({json.dumps(tour, separators=(",", ":"))});\n')
            out[name] = (cmd, tour)
            break
        else:
            raise RuntimeError(f'no seed in {seeds} shows the {name} tour')
    return out
