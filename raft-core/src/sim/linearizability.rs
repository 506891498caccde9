//! A linearizability checker for the key-value client histories the
//! simulator records.
//!
//! Raft's safety invariants (one leader per term, log matching, ...) are
//! checked inside the cluster; this module checks what a client can see from
//! outside: every operation must appear to take effect at one instant between
//! its invocation and its reply, in an order that a single copy of the map
//! could have produced. A bug that loses a committed write or serves a stale
//! read shows up here even when no internal invariant notices it.
//!
//! The model is one register per key (`u64 -> u64`, initially absent) with
//! `Put` and `Get`. Linearizability is compositional (Herlihy & Wing), so a
//! history is linearizable exactly when each key's sub-history is, and each
//! key is searched on its own: that keeps the searches small.
//!
//! The search is the Wing & Gong algorithm with Lowe's improvements, as in
//! Knossos and Porcupine ("WGL"): the calls and returns of the operations
//! form a list sorted by time; the search repeatedly linearizes an operation
//! whose call comes before the first return still in the list, and backtracks
//! when it meets that return, because the operation that returns there has
//! not taken effect yet and now never can. A cache of (set of linearized
//! operations, register value) pairs prunes states already shown to fail,
//! and a bound on the number of states keeps a pathological history from
//! running forever.
//!
//! Choices the search depends on:
//!
//! * Real time is strict: an operation happens before another only if it
//!   returned at a time strictly less than the other's invocation. An
//!   operation invoked at the instant another returns counts as concurrent
//!   with it, so equal times never make a correct history fail.
//! * An operation with no reply (`complete == None`) may have taken effect at
//!   any time after its invocation, or never. A `Get` with no reply
//!   constrains nothing and is dropped. A `Put` with no reply has no return
//!   event, so it never forces a backtrack, and the search succeeds once all
//!   completed operations are linearized, with or without it.
//! * A `Put` with no reply whose value no completed `Get` of the key
//!   returned is dropped before searching. Taking effect could only make
//!   some later `Get` read its value, and none did, so removing it from any
//!   valid order leaves a valid order; dropping it keeps lost writes, common
//!   under partitions, from multiplying the search.
//! * Running out of the state bound is not a verdict. It is reported as a
//!   [`Violation`] of kind [`ViolationKind::SearchLimitExceeded`], so that a
//!   caller treating every error as a failure stays safe, and one that wants
//!   to tell "wrong" from "undecided" can.

use std::collections::{BTreeMap, HashSet};

/// The number of distinct search states [`check`] explores, over all keys,
/// before it gives up with [`ViolationKind::SearchLimitExceeded`].
pub const DEFAULT_STATE_LIMIT: u64 = 5_000_000;

/// What a client asked for, and for a read what it was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Set `key` to `value`.
    Put { key: u64, value: u64 },
    /// Read `key`; `result` is what the client was told (`None`: absent).
    /// Only meaningful when the operation completed.
    Get { key: u64, result: Option<u64> },
}

impl OpKind {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            OpKind::Put { key, .. } | OpKind::Get { key, .. } => key,
        }
    }
}

/// One client operation as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Op {
    /// Who issued it; used only to name the operation in reports.
    pub client: u64,
    /// Simulated time the client sent the request.
    pub invoke: u64,
    /// Simulated time the client got the reply; `None` if it never did, in
    /// which case the operation may have taken effect at any time after
    /// `invoke`, or never.
    pub complete: Option<u64>,
    pub kind: OpKind,
}

/// Why [`check`] refused a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// No order of the key's operations respects real time and the register
    /// semantics: the history is not linearizable.
    NotLinearizable,
    /// The search explored its bound of states without an answer: the
    /// history may or may not be linearizable.
    SearchLimitExceeded,
    /// An operation returned before it was invoked: the recorder is broken,
    /// not the system under test.
    MalformedHistory,
}

/// A key whose sub-history [`check`] could not linearize, with a readable
/// account of why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {key} ({ops} ops): {reason}")]
pub struct Violation {
    /// The key whose sub-history failed; the other keys may not have been
    /// checked.
    pub key: u64,
    /// The number of operations on `key` that were checked (`Get`s with no
    /// reply excluded).
    pub ops: usize,
    pub kind: ViolationKind,
    /// A human-readable explanation naming the operations involved (client,
    /// times, values). For [`ViolationKind::SearchLimitExceeded`] it starts
    /// with "search limit exceeded".
    pub reason: String,
}

/// What a successful [`check`] looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// Operations checked: the history minus `Get`s with no reply.
    pub ops: usize,
    /// Distinct keys among them.
    pub keys: usize,
    /// Distinct (linearized set, value) states the search visited, over all
    /// keys.
    pub states_explored: u64,
}

/// Checks that `history` is linearizable for a map of registers, exploring
/// at most [`DEFAULT_STATE_LIMIT`] states.
///
/// `Ok` means a valid order exists for every key. `Err` names the first key
/// (in ascending order) that failed; see [`ViolationKind`] for whether that
/// is a proof of non-linearizability. The order of `history` does not matter.
pub fn check(history: &[Op]) -> Result<CheckStats, Violation> {
    check_with_limit(history, DEFAULT_STATE_LIMIT)
}

/// [`check`] with an explicit bound on the number of states explored, over
/// all keys.
pub fn check_with_limit(history: &[Op], max_states: u64) -> Result<CheckStats, Violation> {
    // A BTreeMap so that the key reported on failure does not depend on
    // hashing.
    let mut by_key: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if let Some(complete) = op.complete {
            if complete < op.invoke {
                let key = op.kind.key();
                return Err(Violation {
                    key,
                    ops: history.iter().filter(|o| o.kind.key() == key).count(),
                    kind: ViolationKind::MalformedHistory,
                    reason: format!("{} returned before it was invoked", describe(op)),
                });
            }
        }
        let unanswered_get = op.complete.is_none() && matches!(op.kind, OpKind::Get { .. });
        if !unanswered_get {
            by_key.entry(op.kind.key()).or_default().push(op);
        }
    }

    let mut stats = CheckStats {
        ops: by_key.values().map(Vec::len).sum(),
        keys: by_key.len(),
        states_explored: 0,
    };
    for (&key, ops) in &by_key {
        check_key(key, ops, &mut stats.states_explored, max_states)?;
    }
    Ok(stats)
}

/// Checks one key's sub-history (no unanswered `Get`s), adding the states it
/// visits to `explored`.
fn check_key(key: u64, ops: &[&Op], explored: &mut u64, max_states: u64) -> Result<(), Violation> {
    // A read of a value nobody wrote fails the search too, but only after it
    // has tried every order; saying so directly is faster and clearer.
    for op in ops {
        let (OpKind::Get { result, .. }, Some(complete)) = (op.kind, op.complete) else {
            continue;
        };
        let Some(read) = result else {
            continue;
        };
        let written = ops.iter().any(|w| {
            matches!(w.kind, OpKind::Put { value, .. } if value == read) && w.invoke <= complete
        });
        if !written {
            return Err(Violation {
                key,
                ops: ops.len(),
                kind: ViolationKind::NotLinearizable,
                reason: format!(
                    "{} read a value never written to this key before it returned",
                    describe(op)
                ),
            });
        }
    }

    // See the module doc: an unanswered put nobody read can always be left
    // out.
    let observed: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Get { result, .. } => result,
            OpKind::Put { .. } => None,
        })
        .collect();
    let searched: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| match op.kind {
            OpKind::Put { value, .. } => op.complete.is_some() || observed.contains(&value),
            OpKind::Get { .. } => true,
        })
        .collect();

    search(&searched, explored, max_states).map_err(|failure| Violation {
        key,
        ops: ops.len(),
        kind: failure.kind,
        reason: failure.reason,
    })
}

/// The register value for one key: `None` while absent.
type Value = Option<u64>;

/// Applies `kind` to a register holding `value`: the value afterwards, or
/// `None` if the operation's recorded result contradicts `value`.
fn apply(kind: OpKind, value: Value) -> Option<Value> {
    match kind {
        OpKind::Put { value: new, .. } => Some(Some(new)),
        OpKind::Get { result, .. } => (result == value).then_some(value),
    }
}

/// Marks the end of a linked list and "no return event".
const NIL: usize = usize::MAX;
/// The list's sentinel node; event `e` of the sorted events is node `e + 1`.
const HEAD: usize = 0;

/// The sorted call/return events as a doubly linked list from which a
/// linearized operation's events are unlinked and, on backtracking, linked
/// back ("dancing links": restoring in reverse order of removal needs no
/// search).
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EventList {
    /// A list `HEAD -> 1 -> ... -> len`.
    fn new(len: usize) -> Self {
        let mut next: Vec<usize> = (1..=len + 1).collect();
        next[len] = NIL;
        let prev: Vec<usize> = (0..=len).map(|i| i.wrapping_sub(1)).collect();
        EventList { next, prev }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `unlink(node)`; valid only while every later unlink has been
    /// undone, which the search's stack discipline guarantees.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes an operation: its call and, if it has one, its return.
    fn lift(&mut self, call: usize, ret: usize) {
        self.unlink(call);
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes `lift(call, ret)`, in reverse order.
    fn unlift(&mut self, call: usize, ret: usize) {
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Why a search failed, before the key is attached.
struct Failure {
    kind: ViolationKind,
    reason: String,
}

/// The furthest the search got, kept to explain a failure.
struct Deepest {
    /// Operations linearized, in order.
    prefix: Vec<usize>,
    /// The register value after them.
    value: Value,
    /// The operation whose return the search could not get past.
    blocker: usize,
    /// The operations that could have gone next (the blocker among them).
    candidates: Vec<usize>,
}

/// The WGL search over one key's operations (see the module doc).
fn search(ops: &[&Op], explored: &mut u64, max_states: u64) -> Result<(), Failure> {
    let n = ops.len();
    // (time, is_return, op): sorting puts calls before returns at equal
    // times, which is what makes equal times concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        if let Some(complete) = op.complete {
            events.push((complete, true, i));
        }
    }
    events.sort_unstable();
    let event = |node: usize| {
        let (_, is_return, op) = events[node - 1];
        (is_return, op)
    };
    let mut return_node = vec![NIL; n];
    for (e, &(_, is_return, op)) in events.iter().enumerate() {
        if is_return {
            return_node[op] = e + 1;
        }
    }

    let mut list = EventList::new(events.len());
    let completed = ops.iter().filter(|op| op.complete.is_some()).count();
    let mut completed_done = 0;
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(Box<[u64]>, Value)> = HashSet::new();
    // (call node of a linearized op, register value before it)
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut value: Value = None;
    let mut deepest: Option<Deepest> = None;

    let mut node = list.next[HEAD];
    while completed_done < completed {
        // An unlinearized completed op keeps its return in the list and the
        // scan never passes a return, so the end cannot be reached here.
        assert_ne!(node, NIL, "the scan passed a return event");
        let (is_return, i) = event(node);
        if !is_return {
            if let Some(after) = apply(ops[i].kind, value) {
                linearized[i / 64] |= 1 << (i % 64);
                if seen.insert((linearized.clone().into_boxed_slice(), after)) {
                    *explored += 1;
                    if *explored > max_states {
                        return Err(Failure {
                            kind: ViolationKind::SearchLimitExceeded,
                            reason: format!(
                                "search limit exceeded: {max_states} states explored without \
                                 finding an order or ruling one out ({} of {n} ops linearized \
                                 when it stopped)",
                                stack.len()
                            ),
                        });
                    }
                    stack.push((node, value));
                    value = after;
                    list.lift(node, return_node[i]);
                    if ops[i].complete.is_some() {
                        completed_done += 1;
                    }
                    node = list.next[HEAD];
                    continue;
                }
                // Been here before, and it failed.
                linearized[i / 64] &= !(1 << (i % 64));
            }
            node = list.next[node];
        } else {
            // Op `i` has not taken effect and its return has come: undo the
            // latest choice and try the next call after it.
            if deepest
                .as_ref()
                .is_none_or(|d| stack.len() > d.prefix.len())
            {
                let mut candidates = Vec::new();
                let mut c = list.next[HEAD];
                while c != node {
                    candidates.push(event(c).1);
                    c = list.next[c];
                }
                deepest = Some(Deepest {
                    prefix: stack.iter().map(|&(call, _)| event(call).1).collect(),
                    value,
                    blocker: i,
                    candidates,
                });
            }
            let Some((call, before)) = stack.pop() else {
                let deepest = deepest.expect("recorded just above");
                return Err(Failure {
                    kind: ViolationKind::NotLinearizable,
                    reason: explain(ops, &deepest),
                });
            };
            let j = event(call).1;
            value = before;
            linearized[j / 64] &= !(1 << (j % 64));
            list.unlift(call, return_node[j]);
            if ops[j].complete.is_some() {
                completed_done -= 1;
            }
            node = list.next[call];
        }
    }
    Ok(())
}

/// The most ops of the prefix that a report lists; the last ones matter.
const REPORT_PREFIX: usize = 20;

/// Words the furthest point of a failed search for a human.
fn explain(ops: &[&Op], d: &Deepest) -> String {
    let mut s = format!(
        "not linearizable: the longest order found that respects real time has {} ops and \
         leaves the value {}",
        d.prefix.len(),
        show(d.value)
    );
    if d.prefix.is_empty() {
        s.push('\n');
    } else {
        s.push_str(":\n");
        let skip = d.prefix.len().saturating_sub(REPORT_PREFIX);
        if skip > 0 {
            s.push_str(&format!("  ... {skip} earlier ops\n"));
        }
        for (k, &i) in d.prefix.iter().enumerate().skip(skip) {
            s.push_str(&format!("  {}. {}\n", k + 1, describe(ops[i])));
        }
    }
    let blocker = ops[d.blocker];
    s.push_str(&format!(
        "then {} must take effect before it returns at {}, but none of the ops that may go \
         next leads to a complete order:",
        describe(blocker),
        blocker.complete.expect("only completed ops have returns")
    ));
    for &c in &d.candidates {
        let op = ops[c];
        let why = match (op.kind, apply(op.kind, d.value)) {
            (OpKind::Get { result, .. }, None) => format!(
                "it returned {} but the value would be {}",
                show(result),
                show(d.value)
            ),
            _ => "it fits here, but every continuation fails".to_string(),
        };
        s.push_str(&format!("\n  - {}: {why}", describe(op)));
    }
    s
}

/// Names an operation for a report, e.g. `client 2 get -> 7 [10, 15]`.
fn describe(op: &Op) -> String {
    let what = match op.kind {
        OpKind::Put { value, .. } => format!("put {value}"),
        OpKind::Get { result, .. } => format!("get -> {}", show(result)),
    };
    let complete = match op.complete {
        Some(t) => t.to_string(),
        None => "no reply".to_string(),
    };
    format!("client {} {what} [{}, {complete}]", op.client, op.invoke)
}

fn show(value: Value) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u64, key: u64, value: u64, invoke: u64, complete: Option<u64>) -> Op {
        Op {
            client,
            invoke,
            complete,
            kind: OpKind::Put { key, value },
        }
    }

    fn get(client: u64, key: u64, result: Option<u64>, invoke: u64, complete: Option<u64>) -> Op {
        Op {
            client,
            invoke,
            complete,
            kind: OpKind::Get { key, result },
        }
    }

    fn not_linearizable(history: &[Op]) -> Violation {
        let v = check(history).expect_err("history should not be linearizable");
        assert_eq!(v.kind, ViolationKind::NotLinearizable, "{v}");
        v
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            get(1, 1, None, 0, Some(1)),
            put(1, 1, 10, 2, Some(3)),
            get(2, 1, Some(10), 4, Some(5)),
            put(2, 1, 11, 6, Some(7)),
            get(1, 1, Some(11), 8, Some(9)),
            put(1, 2, 20, 10, Some(11)),
            get(2, 2, Some(20), 12, Some(13)),
            get(2, 3, None, 14, Some(15)),
        ];
        let stats = check(&h).unwrap();
        assert_eq!(stats.ops, 8);
        assert_eq!(stats.keys, 3);
        assert!(stats.states_explored >= 8);
    }

    #[test]
    fn concurrent_get_may_see_either_value() {
        for seen in [1, 2] {
            let h = [
                put(1, 7, 1, 0, Some(10)),
                put(1, 7, 2, 20, Some(30)),
                get(2, 7, Some(seen), 25, Some(35)),
            ];
            check(&h).unwrap_or_else(|v| panic!("get -> {seen}: {v}"));
        }
    }

    #[test]
    fn stale_read_after_completed_put_is_caught() {
        let h = [put(1, 3, 1, 0, Some(10)), get(2, 3, None, 20, Some(30))];
        let v = not_linearizable(&h);
        assert_eq!(v.key, 3);
        assert!(v.reason.contains("client 2 get -> absent [20, 30]"), "{v}");
        assert!(v.reason.contains("client 1 put 1 [0, 10]"), "{v}");
    }

    #[test]
    fn read_of_a_value_never_written_is_caught() {
        let h = [put(1, 3, 1, 0, Some(10)), get(2, 3, Some(99), 5, Some(30))];
        let v = not_linearizable(&h);
        assert!(v.reason.contains("never written"), "{v}");
        // The search rejects it on its own too; the pre-check only explains
        // it better.
        let ops: Vec<&Op> = h.iter().collect();
        assert!(search(&ops, &mut 0, DEFAULT_STATE_LIMIT).is_err());
        // A value written only after the read returned is just as impossible.
        let h = [get(2, 3, Some(1), 0, Some(5)), put(1, 3, 1, 6, Some(10))];
        not_linearizable(&h);
    }

    #[test]
    fn gets_seeing_puts_out_of_order_are_caught() {
        // Each get alone overlaps put 2 and may see 1 or 2, but the earlier
        // get saw 2, so the later one cannot see 1 again.
        let h = [
            put(1, 0, 1, 0, Some(10)),
            put(1, 0, 2, 20, Some(50)),
            get(2, 0, Some(2), 25, Some(30)),
            get(3, 0, Some(1), 35, Some(40)),
        ];
        let v = not_linearizable(&h);
        assert!(v.reason.contains("client 3 get -> 1 [35, 40]"), "{v}");
        // Swapping what the gets saw is fine.
        let h = [
            put(1, 0, 1, 0, Some(10)),
            put(1, 0, 2, 20, Some(50)),
            get(2, 0, Some(1), 25, Some(30)),
            get(3, 0, Some(2), 35, Some(40)),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unanswered_put_may_be_observed_later() {
        let h = [
            put(1, 4, 5, 0, None),
            get(2, 4, None, 10, Some(20)),
            get(2, 4, Some(5), 100, Some(110)),
            get(3, 4, Some(5), 120, Some(130)),
        ];
        check(&h).unwrap();
        // Once observed it has taken effect and cannot be undone.
        let h = [
            put(1, 4, 5, 0, None),
            get(2, 4, Some(5), 100, Some(110)),
            get(3, 4, None, 120, Some(130)),
        ];
        not_linearizable(&h);
        // Nor can it take effect before it was sent.
        let h = [get(2, 4, Some(5), 0, Some(10)), put(1, 4, 5, 20, None)];
        not_linearizable(&h);
    }

    #[test]
    fn unanswered_put_may_never_take_effect() {
        let h = [
            put(1, 4, 1, 0, Some(5)),
            put(1, 4, 5, 10, None),
            get(2, 4, Some(1), 100, Some(110)),
            get(3, 4, Some(1), 120, Some(130)),
        ];
        check(&h).unwrap();
        // The same without the dropping of unread unanswered puts, so that
        // the search's own handling of them is exercised.
        let ops: Vec<&Op> = h.iter().collect();
        search(&ops, &mut 0, DEFAULT_STATE_LIMIT).unwrap_or_else(|f| panic!("{}", f.reason));
    }

    #[test]
    fn unanswered_get_is_ignored() {
        let h = [put(1, 1, 1, 0, Some(10)), get(2, 1, Some(42), 20, None)];
        let stats = check(&h).unwrap();
        assert_eq!(stats.ops, 1);
    }

    #[test]
    fn equal_times_are_concurrent() {
        // The get was invoked at the instant the put returned, so it may
        // have been ordered first.
        let h = [put(1, 1, 1, 0, Some(5)), get(2, 1, None, 5, Some(6))];
        check(&h).unwrap();
        // One tick later it may not.
        let h = [put(1, 1, 1, 0, Some(5)), get(2, 1, None, 6, Some(7))];
        not_linearizable(&h);
    }

    #[test]
    fn malformed_history_is_reported() {
        let v = check(&[put(1, 1, 1, 10, Some(5))]).unwrap_err();
        assert_eq!(v.kind, ViolationKind::MalformedHistory);
    }

    #[test]
    fn search_limit_is_reported_distinctly() {
        let h = generate(7, 200, 3, 5);
        let v = check_with_limit(&h, 10).unwrap_err();
        assert_eq!(v.kind, ViolationKind::SearchLimitExceeded);
        assert!(v.reason.starts_with("search limit exceeded"), "{v}");
    }

    /// A tiny deterministic generator (Knuth's MMIX LCG), so tests need no
    /// `rand` dependency.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// A linearizable history by construction: operations are executed one
    /// at a time against a real map at strictly increasing instants, and
    /// each gets a random interval around its instant, with each client
    /// sequential. Every value written is unique. Some replies are lost,
    /// and some lost puts never took effect at all.
    fn generate(seed: u64, n_ops: usize, clients: usize, keys: u64) -> Vec<Op> {
        let mut rng = Lcg(seed);
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        // When each client last finished (or gave up on) an operation.
        let mut busy_until = vec![0u64; clients];
        let mut instant = 0;
        let mut next_value = 1;
        let mut history = Vec::with_capacity(n_ops);
        while history.len() < n_ops {
            instant += 1 + rng.below(10);
            let idle: Vec<usize> = (0..clients).filter(|&c| busy_until[c] < instant).collect();
            if idle.is_empty() {
                continue;
            }
            let client = idle[rng.below(idle.len() as u64) as usize];
            let key = rng.below(keys);
            let invoke = instant
                .saturating_sub(rng.below(40))
                .max(busy_until[client] + 1);
            let complete = instant + rng.below(40);
            busy_until[client] = complete;
            let (kind, lost) = match rng.below(20) {
                0 => {
                    // A put that was lost before taking effect.
                    next_value += 1;
                    let kind = OpKind::Put {
                        key,
                        value: next_value,
                    };
                    (kind, true)
                }
                1..=9 => {
                    next_value += 1;
                    map.insert(key, next_value);
                    let kind = OpKind::Put {
                        key,
                        value: next_value,
                    };
                    (kind, rng.below(10) == 0)
                }
                _ => {
                    let result = map.get(&key).copied();
                    (OpKind::Get { key, result }, rng.below(10) == 0)
                }
            };
            history.push(Op {
                client: client as u64,
                invoke,
                complete: (!lost).then_some(complete),
                kind,
            });
        }
        history
    }

    #[test]
    fn generated_histories_are_linearizable() {
        for seed in 1..=20 {
            let h = generate(seed, 200, 3, 5);
            let stats = check(&h).unwrap_or_else(|v| panic!("seed {seed}: {v}"));
            assert_eq!(stats.keys, 5);
        }
    }

    #[test]
    fn stale_read_in_generated_history_is_caught() {
        let mut h = generate(1, 200, 3, 5);
        check(&h).unwrap();
        // Find a completed get that began after a completed put P_new that
        // began after a completed put P_old ended: making it read P_old's
        // value is stale whatever else happened, since values are unique.
        let completed_put = |op: &Op| match op.kind {
            OpKind::Put { key, value } if op.complete.is_some() => Some((key, value)),
            _ => None,
        };
        let mut mutation = None;
        'search: for (g, op) in h.iter().enumerate() {
            let (OpKind::Get { key, result }, Some(_)) = (op.kind, op.complete) else {
                continue;
            };
            for new in &h {
                let Some((new_key, _)) = completed_put(new) else {
                    continue;
                };
                if new_key != key || new.complete.unwrap() >= op.invoke {
                    continue;
                }
                for old in &h {
                    let Some((old_key, old_value)) = completed_put(old) else {
                        continue;
                    };
                    if old_key == key
                        && old.complete.unwrap() < new.invoke
                        && result != Some(old_value)
                    {
                        mutation = Some((g, key, old_value));
                        break 'search;
                    }
                }
            }
        }
        let (g, key, stale) = mutation.expect("the generator makes such a get");
        h[g].kind = OpKind::Get {
            key,
            result: Some(stale),
        };
        let v = not_linearizable(&h);
        assert_eq!(v.key, key);
    }

    #[test]
    fn large_history_checks_within_the_bound() {
        let h = generate(42, 2000, 5, 10);
        let stats = check(&h).unwrap_or_else(|v| panic!("{v}"));
        assert_eq!(stats.keys, 10);
        assert!(stats.states_explored <= DEFAULT_STATE_LIMIT);
    }

    /// An independent, exponential reference: tries every order of every
    /// subset holding all completed ops, checking real time pairwise.
    fn brute_force(ops: &[Op]) -> bool {
        fn extend(ops: &[Op], used: &mut Vec<bool>, order: &mut Vec<usize>, value: Value) -> bool {
            let all_completed = (0..ops.len()).all(|i| used[i] || ops[i].complete.is_none());
            if all_completed {
                return true;
            }
            for i in 0..ops.len() {
                if used[i] {
                    continue;
                }
                // Every op placed before `i` must not have been invoked
                // after `i` returned.
                let respects_real_time = order
                    .iter()
                    .all(|&j| ops[i].complete.is_none_or(|c| ops[j].invoke <= c));
                // And no op left out or placed after may have returned
                // before `i` was invoked; an unplaced completed op will be
                // placed later, so check those now.
                let nothing_skipped = (0..ops.len()).all(|j| {
                    used[j] || j == i || ops[j].complete.is_none_or(|c| c >= ops[i].invoke)
                });
                if !respects_real_time || !nothing_skipped {
                    continue;
                }
                let Some(after) = apply(ops[i].kind, value) else {
                    continue;
                };
                used[i] = true;
                order.push(i);
                let ok = extend(ops, used, order, after);
                order.pop();
                used[i] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        extend(ops, &mut vec![false; ops.len()], &mut Vec::new(), None)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = Lcg(2024);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + rng.below(6) as usize;
            let h: Vec<Op> = (0..n)
                .map(|c| {
                    // Small times so that ties and overlaps are common.
                    let invoke = rng.below(8);
                    let complete = (rng.below(6) != 0).then(|| invoke + rng.below(4));
                    let key = 0;
                    let kind = if rng.below(2) == 0 {
                        OpKind::Put {
                            key,
                            value: 1 + rng.below(2),
                        }
                    } else {
                        let result = (rng.below(3) != 0).then(|| 1 + rng.below(2));
                        OpKind::Get { key, result }
                    };
                    Op {
                        client: c as u64,
                        invoke,
                        complete,
                        kind,
                    }
                })
                .collect();
            let expected = brute_force(&h);
            let got = check(&h);
            assert_eq!(got.is_ok(), expected, "{h:?}: {got:?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both verdicts were exercised.
        assert!(yes > 300 && no > 300, "yes {yes}, no {no}");
    }
}
