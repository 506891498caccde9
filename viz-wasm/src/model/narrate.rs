//! Events told in plain sentences, for the page's narration line.
//!
//! Each trace event becomes one sentence that says what happened and, where
//! the event alone makes it clear, what it means for Raft ("n2 has a
//! majority for index 17: the entry is committed"). A sentence is built
//! from the record and the cluster state right after it (for the
//! configuration, the leader, a snapshot's progress), never from events
//! further on, so it is the same whether the page got there by playing,
//! seeking or a live session.
//!
//! Every event kind has a sentence (a native test walks every kind and
//! every message type); real nodes' traces (no messages) are told with the
//! same words as simulated ones.

use raft_core::trace::{ClientDir, ClientOp, Kind, Msg, NodeRole, Record, TransferPhase};
use raft_core::NodeId;

use super::state::{ClusterState, Config, Narration};

/// Event `i` (`r`), told with the state right after it (`after`).
pub fn narrate(i: usize, r: &Record, after: &ClusterState) -> Narration {
    Narration {
        i,
        node: r.node,
        ev: r.kind.name(),
        text: sentence(r, after),
    }
}

/// `n3`.
fn n(id: NodeId) -> String {
    format!("n{id}")
}

/// `n1, n2 and n3` (`nobody` when empty).
fn list(ids: &[NodeId]) -> String {
    match ids {
        [] => "nobody".to_string(),
        [a] => n(*a),
        [rest @ .., last] => format!(
            "{} and {}",
            rest.iter().map(|&x| n(x)).collect::<Vec<_>>().join(", "),
            n(*last)
        ),
    }
}

/// `entry 5` or `entries 5..7`.
fn entries(first: u64, last: u64) -> String {
    if first == last {
        format!("entry {first}")
    } else {
        format!("entries {first}..{last}")
    }
}

fn role_name(r: NodeRole) -> &'static str {
    match r {
        NodeRole::Follower => "follower",
        NodeRole::Precandidate => "pre-candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
        NodeRole::Down => "down",
        NodeRole::None => "none",
    }
}

/// The majority a decision needs under `config`, in words.
fn majority(config: Option<&Config>) -> String {
    match config {
        Some(c) if !c.outgoing.is_empty() => format!(
            "a majority of both the old voters ({}) and the new ones ({})",
            list(&c.outgoing),
            list(&c.voters)
        ),
        Some(c) if !c.voters.is_empty() => format!(
            "a majority of the voters ({} of {})",
            c.voters.len() / 2 + 1,
            c.voters.len()
        ),
        _ => "a majority of the voters".to_string(),
    }
}

/// A message in a few words, as its sender would describe it.
pub fn message(m: &Msg) -> String {
    match *m {
        Msg::PreVote {
            term,
            last_index,
            last_term,
            transfer,
        } => format!(
            "a pre-vote request for term {term} (its last entry: index {last_index}, term {last_term}){}",
            if transfer { ", for a leader transfer" } else { "" }
        ),
        Msg::Vote {
            term,
            last_index,
            last_term,
            transfer,
        } => format!(
            "a vote request for term {term} (its last entry: index {last_index}, term {last_term}){}",
            if transfer {
                ", for a leader transfer: vote even though a leader is known"
            } else {
                ""
            }
        ),
        Msg::PreVoteResp { term, granted } => format!(
            "a pre-vote for term {term}: {}",
            if granted { "granted" } else { "refused" }
        ),
        Msg::VoteResp { term, granted } => format!(
            "a vote for term {term}: {}",
            if granted { "granted" } else { "refused" }
        ),
        Msg::Append {
            prev_index,
            prev_term,
            entries: 0,
            leader_commit,
            ..
        } => format!(
            "an empty append checking the log matches at index {prev_index} (term {prev_term}), commit {leader_commit}"
        ),
        Msg::Append {
            prev_index,
            prev_term,
            first,
            last,
            leader_commit,
            ..
        } => format!(
            "an append of {} after index {prev_index} (term {prev_term}), commit {leader_commit}",
            entries(first, last)
        ),
        Msg::AppendResp {
            success: true,
            index,
            ..
        } => format!("an append answer: its log matches up to index {index}"),
        Msg::AppendResp {
            index,
            hint_index,
            hint_term,
            ..
        } => format!(
            "an append answer: no match at index {index} (hint: index {hint_index}, term {hint_term}), so the leader backs up"
        ),
        Msg::Heartbeat {
            commit, read_round, ..
        } => {
            if read_round > 0 {
                format!("a heartbeat (commit {commit}) confirming read round {read_round}")
            } else {
                format!("a heartbeat (commit {commit})")
            }
        }
        Msg::HeartbeatResp { read_round, .. } => {
            if read_round > 0 {
                format!("a heartbeat answer for read round {read_round}")
            } else {
                "a heartbeat answer".to_string()
            }
        }
        Msg::TimeoutNow { .. } => "timeout_now: campaign at once".to_string(),
        Msg::InstallSnapshot {
            index,
            snap_term,
            files,
            bytes,
            ..
        } => format!(
            "a snapshot offer: everything up to index {index} (term {snap_term}), {files} file(s), {bytes} bytes"
        ),
        Msg::SnapshotChunkRequest {
            index,
            file,
            offset,
            len,
            ..
        } => format!(
            "a request for {len} bytes of snapshot {index}, file {file} at offset {offset}"
        ),
        Msg::SnapshotChunk {
            index, gone: true, ..
        } => format!("word that snapshot {index} is gone"),
        Msg::SnapshotChunk {
            index,
            file,
            offset,
            len,
            ..
        } => format!("{len} bytes of snapshot {index}, file {file} at offset {offset}"),
    }
}

/// What a message asks or means, for the sentence of its `send`.
fn send(from: NodeId, to: NodeId, m: &Msg) -> String {
    let (a, b) = (n(from), n(to));
    match *m {
        Msg::PreVote { term, .. } => format!(
            "{a} asks {b} for a pre-vote for term {term}: would it vote, if {a} stood? Nobody's term changes yet"
        ),
        Msg::Vote { term, .. } => format!("{a} asks {b} to vote for it in term {term}: {}", message(m)),
        Msg::PreVoteResp { granted, .. } | Msg::VoteResp { granted, .. } => {
            let what = if matches!(m, Msg::PreVoteResp { .. }) {
                "pre-vote"
            } else {
                "vote"
            };
            if granted {
                format!("{a} sends {b} its {what}: granted")
            } else {
                format!("{a} sends {b} its {what}: refused")
            }
        }
        Msg::Append {
            entries: 0,
            prev_index,
            ..
        } => format!(
            "leader {a} sends {b} an empty append: does {b}'s log match at index {prev_index}?"
        ),
        Msg::Append { first, last, .. } => format!(
            "leader {a} sends {b} {}: {}",
            entries(first, last),
            message(m)
        ),
        Msg::AppendResp { success: true, index, .. } => format!(
            "{a} tells leader {b} that its log matches up to index {index}"
        ),
        Msg::AppendResp { .. } => format!("{a} answers {b} with {}", message(m)),
        Msg::Heartbeat { .. } => format!(
            "leader {a} sends {b} {}: it is still in charge, so {b} restarts its election timer",
            message(m)
        ),
        Msg::HeartbeatResp { .. } => format!("{a} answers leader {b}'s heartbeat"),
        Msg::TimeoutNow { .. } => format!(
            "leader {a} tells {b} to campaign now: {b} is up to date, so it can take over (leader transfer)"
        ),
        Msg::InstallSnapshot { index, .. } => format!(
            "leader {a} offers {b} its snapshot: {b} needs entries {a} has compacted away, so it gets everything up to index {index} at once"
        ),
        Msg::SnapshotChunkRequest { .. } => format!("{a} asks {b} for {}", message(m)),
        Msg::SnapshotChunk { .. } => format!("{a} sends {b} {}", message(m)),
    }
}

/// The sentence for `r`.
fn sentence(r: &Record, after: &ClusterState) -> String {
    let me = n(r.node);
    let config = after
        .nodes
        .get(&r.node)
        .and_then(|x| x.config.as_ref())
        .or(after.config.as_ref());
    match &r.kind {
        Kind::Role { from, leader } => match r.role {
            NodeRole::Leader => format!(
                "{me} won the election for term {}: {} voted for it. It is the leader now and sends heartbeats so nobody else times out",
                r.term,
                majority(config)
            ),
            NodeRole::Precandidate => format!(
                "{me} becomes a pre-candidate: before raising its term ({}) it asks whether the others would vote for it",
                r.term
            ),
            NodeRole::Candidate => format!(
                "{me} becomes a candidate for term {}: it votes for itself and asks the others for votes",
                r.term
            ),
            NodeRole::Follower => {
                let why = match (*from, leader) {
                    (_, Some(l)) => format!("it follows leader {} in term {}", n(*l), r.term),
                    (NodeRole::Leader, None) => format!("it is no longer leader (term {})", r.term),
                    _ => format!("no leader is known in term {} yet", r.term),
                };
                format!("{me} is a follower again ({} before): {why}", role_name(*from))
            }
            NodeRole::Down | NodeRole::None => format!("{me} is {}", role_name(r.role)),
        },
        Kind::Timeout { pre_vote: true } => format!(
            "{me}'s election timer fired (no word from a leader for a whole timeout): it asks the others for pre-votes for term {}",
            r.term.saturating_add(1)
        ),
        Kind::Timeout { pre_vote: false } => format!(
            "{me}'s election timer fired (no word from a leader for a whole timeout): it starts an election for term {}",
            if r.role == NodeRole::Candidate {
                r.term
            } else {
                r.term.saturating_add(1)
            }
        ),
        Kind::Vote {
            candidate,
            pre_vote,
            granted,
        } => {
            let c = n(*candidate);
            match (*pre_vote, *granted) {
                (true, true) => format!(
                    "{me} would vote for {c}: {c}'s log is at least as up to date as its own and it has not heard from a leader lately"
                ),
                (true, false) => format!(
                    "{me} refuses {c} a pre-vote: it still hears from a leader, or {c}'s log is behind its own. {c}'s term does not rise"
                ),
                (false, true) => format!(
                    "{me} votes for {c} in term {}: one vote per term, saved to disk before the answer is sent",
                    r.term
                ),
                (false, false) => format!(
                    "{me} refuses {c} its vote in term {}: it already voted for another, or {c}'s log is behind its own",
                    r.term
                ),
            }
        }
        Kind::Stepdown { reason } if reason == "check_quorum" => format!(
            "{me} steps down: it has not heard from {} for an election timeout (CheckQuorum), so it may be cut off and a newer leader may exist",
            majority(config)
        ),
        Kind::Stepdown { reason } => format!("{me} gives up leadership ({reason})"),
        Kind::Send { to, m, .. } => send(r.node, *to, m),
        Kind::Recv { from, m, .. } => format!("{me} receives from {}: {}", n(*from), message(m)),
        Kind::Drop { to, reason, .. } => {
            let why = match reason.as_str() {
                "partition" => "the link is cut".to_string(),
                "down" => format!("{} is down", n(*to)),
                "fault" => "the network lost it (an injected fault)".to_string(),
                other => other.to_string(),
            };
            format!("A message from {me} to {} is lost: {why}", n(*to))
        }
        Kind::Append {
            first,
            last,
            last_term,
        } => {
            if r.role == NodeRole::Leader {
                format!(
                    "Leader {me} writes {} of term {} to its own disk; once a majority holds them they are committed",
                    entries(*first, *last),
                    r.term
                )
            } else {
                format!(
                    "{me} writes {} to disk (the last of term {last_term}); now it can acknowledge them to the leader",
                    entries(*first, *last)
                )
            }
        }
        Kind::Persist { hs_term, vote, .. } => match vote {
            Some(v) => format!(
                "{me} saves term {hs_term} and its vote for {} to disk before answering: a crash cannot make it vote twice",
                n(*v)
            ),
            None => format!("{me} saves term {hs_term} to disk (no vote in it yet)"),
        },
        Kind::Commit { index } => {
            if r.role == NodeRole::Leader {
                format!(
                    "{me} has {} holding index {index}: entries up to {index} are committed and can be applied",
                    majority(config)
                )
            } else {
                format!("{me} learns from the leader that entries up to {index} are committed")
            }
        }
        Kind::Apply { first, last } => format!(
            "{me} applies {} to its state machine (the key-value map)",
            entries(*first, *last)
        ),
        Kind::Read { ctx, index, lease } => {
            if *lease {
                format!(
                    "{me} may serve read {ctx} at index {index}: its leader lease has not run out"
                )
            } else {
                format!(
                    "{me} may serve read {ctx} at index {index}: a majority confirmed it is still leader"
                )
            }
        }
        Kind::Transfer { phase, to } => {
            let t = n(*to);
            match phase {
                TransferPhase::Start => format!(
                    "Leader {me} starts handing leadership to {t}: it stops taking writes and brings {t}'s log up to date"
                ),
                TransferPhase::TimeoutNow => format!(
                    "{t} is up to date: {me} tells it to campaign at once, without waiting for its timer"
                ),
                TransferPhase::Abort => format!(
                    "{me} abandons the transfer to {t} (it did not take over in time) and takes writes again"
                ),
            }
        }
        Kind::Client {
            dir,
            client,
            op,
            key,
            value,
            outcome,
            ..
        } => {
            let what = match (op, value) {
                (ClientOp::Put, Some(v)) => format!("put k{key}={v}"),
                (ClientOp::Put, None) => format!("put k{key}"),
                (ClientOp::Get, _) => format!("get k{key}"),
            };
            match dir {
                ClientDir::Request => format!("Client c{client} sends {what} to {me}"),
                ClientDir::Reply => match outcome.as_deref() {
                    Some("ok") => match (op, value) {
                        (ClientOp::Get, Some(v)) => {
                            format!("{me} answers client c{client}'s {what}: the value is {v}")
                        }
                        _ => format!("{me} answers client c{client}'s {what}: done (committed)"),
                    },
                    Some("not_leader") => format!(
                        "{me} tells client c{client} it is not the leader; the client tries another node"
                    ),
                    Some(o) => format!("{me} answers client c{client}'s {what}: {o}"),
                    None => format!("{me} answers client c{client}'s {what}"),
                },
            }
        }
        Kind::Crash => format!(
            "{me} crashes: what was only in memory is lost; its log, term and vote on disk survive"
        ),
        Kind::Restart => format!(
            "{me} restarts from its disk (log, term, vote, snapshot) as a follower"
        ),
        Kind::Pause => format!(
            "{me} stalls (a long pause, a stopped process): no ticks, no messages handled, but its state stays"
        ),
        Kind::Resume => format!("{me} resumes where it stopped"),
        Kind::Partition { blocked } => {
            format!("The network splits: {}", partition(blocked, after))
        }
        Kind::Heal => "The network heals: every link works again".to_string(),
        Kind::Tickrate { period } => format!(
            "{me}'s clock drifts: it now ticks every {period} time units"
        ),
        Kind::Config {
            change,
            index,
            voters,
            outgoing,
            learners,
        } => {
            let learners = if learners.is_empty() {
                String::new()
            } else {
                format!(", learners {}", list(learners))
            };
            let at = if *index > 0 {
                format!(" (entry {index})")
            } else {
                String::new()
            };
            match change.as_str() {
                "loaded" => format!(
                    "{me} starts with voters {}{learners}",
                    list(voters)
                ),
                "joint_entered" => format!(
                    "{me} enters joint consensus{at}: old voters {}, new voters {}{learners}. Until it leaves, every decision needs a majority of both",
                    list(outgoing),
                    list(voters)
                ),
                "joint_left" => format!(
                    "{me} leaves joint consensus{at}: the voters are now {}{learners}",
                    list(voters)
                ),
                "learner_added" => format!(
                    "{me} now counts a new learner{at}: learners receive the log but do not vote; voters {}{learners}",
                    list(voters)
                ),
                other => format!(
                    "{me}'s configuration changes ({}){at}: voters {}{learners}. It takes effect when appended, not when committed",
                    other.replace('_', " "),
                    list(voters)
                ),
            }
        }
        Kind::Quiesce { quiescent: true, .. } => match r.role {
            NodeRole::Leader => format!(
                "Leader {me}'s group has been idle: it sends a last heartbeat marked quiesce and stops heartbeating until something needs Raft"
            ),
            _ => format!(
                "{me} holds the leader's whole log, so it accepts the quiesce heartbeat: it stops its election timer and relies on node-level liveness to learn if the leader's node dies"
            ),
        },
        Kind::Quiesce { reason, .. } => match reason.as_str() {
            "leader_dead" => format!(
                "{me} wakes: its host declared the leader's node dead, so it restarts its election timer and will campaign"
            ),
            "peer_alive" => format!(
                "Leader {me} wakes: a peer's node came back, so it heartbeats again"
            ),
            "work" => format!("{me} wakes for client work (a proposal, a read or a change)"),
            _ => format!("{me} wakes: a message arrived, and its group is awake again"),
        },
        Kind::Snapshot {
            phase,
            index,
            peer,
            bytes,
            ok,
        } => {
            let progress = after
                .nodes
                .get(&r.node)
                .and_then(|x| x.snap_in.as_ref())
                .filter(|s| s.index == *index && s.total > 0)
                .map(|s| format!(" ({} of {} bytes)", s.got, s.total))
                .unwrap_or_default();
            let p = peer.map(n).unwrap_or_else(|| "a follower".to_string());
            match (phase.as_str(), ok) {
                ("taken", _) => format!(
                    "{me} saves a snapshot of its state machine at index {index} ({bytes} bytes): its log up to {index} may now be discarded"
                ),
                ("offered", _) => format!(
                    "Leader {me} offers {p} its snapshot at index {index} ({bytes} bytes): {p} is behind the compacted log"
                ),
                ("chunk_sent", _) => format!("{me} sends {p} {bytes} bytes of snapshot {index}"),
                ("chunk_received", true) => format!(
                    "{me} receives {bytes} bytes of snapshot {index}, checksum good{progress}"
                ),
                ("chunk_received", false) => format!(
                    "{me} receives a damaged chunk of snapshot {index} (bad checksum or length): it asks for it again"
                ),
                ("resumed", _) => format!(
                    "{me} resumes snapshot {index} from the {bytes} bytes it already holds"
                ),
                ("installed", _) => format!(
                    "{me} installs snapshot {index}: every file checked, its log and state machine now start after index {index}"
                ),
                ("discarded", _) => format!("{me} drops its partial copy of snapshot {index}"),
                (other, _) => format!("{me}: snapshot {index} {}", other.replace('_', " ")),
            }
        }
        Kind::Compact { upto } => format!(
            "{me} discards its log entries up to {upto}: its snapshot covers them"
        ),
    }
}

/// The cut links of a `partition`, in words: whole nodes cut off when
/// every link of theirs is cut, else the links.
fn partition(blocked: &[(NodeId, NodeId)], after: &ClusterState) -> String {
    if blocked.is_empty() {
        return "no link is cut".to_string();
    }
    let ids: Vec<NodeId> = after.nodes.keys().copied().collect();
    let cut = |a: NodeId, b: NodeId| blocked.contains(&(a, b));
    let isolated: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|&a| ids.iter().all(|&b| a == b || (cut(a, b) && cut(b, a))))
        .collect();
    let mut links = Vec::new();
    for &(a, b) in blocked {
        if isolated.contains(&a) || isolated.contains(&b) {
            continue;
        }
        if cut(b, a) {
            if a < b {
                links.push(format!("{}–{}", n(a), n(b)));
            }
        } else {
            links.push(format!("{}→{} (one way)", n(a), n(b)));
        }
    }
    let mut parts = Vec::new();
    if !isolated.is_empty() {
        parts.push(format!("{} cut off from every other node", list(&isolated)));
    }
    if !links.is_empty() {
        parts.push(format!("links cut: {}", links.join(", ")));
    }
    parts.join("; ")
}
