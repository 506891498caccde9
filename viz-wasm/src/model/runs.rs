//! Per-entry terms kept as runs: `(first_index, last_index, term)` triples,
//! sorted, non-overlapping, with no two adjacent runs of equal term touching.
//!
//! A log of a million entries written in a handful of terms is a handful of
//! runs, so cloning a node's log into a checkpoint is cheap and no
//! operation ever walks entries one by one (a trace may name any index,
//! up to `u64::MAX`).

use serde::Serialize;

/// One run: entries `.0..=.1` all have term `.2`.
pub type Run = (u64, u64, u64);

/// A set of index ranges with a term each (gaps allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Runs(pub Vec<Run>);

impl Runs {
    /// No runs.
    pub fn new() -> Runs {
        Runs(Vec::new())
    }

    /// The runs, sorted by index.
    pub fn as_slice(&self) -> &[Run] {
        &self.0
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last index held, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.0.last().map(|r| r.1)
    }

    /// The first index held, if any.
    pub fn first_index(&self) -> Option<u64> {
        self.0.first().map(|r| r.0)
    }

    /// The term of entry `index`, if held.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        // The first run whose end is at or after `index`.
        let k = self.0.partition_point(|r| r.1 < index);
        self.0.get(k).filter(|r| r.0 <= index).map(|r| r.2)
    }

    /// Removes every entry at or after `index`.
    pub fn truncate_from(&mut self, index: u64) {
        let k = self.0.partition_point(|r| r.1 < index);
        self.0.truncate(k + 1);
        if let Some(last) = self.0.get_mut(k) {
            if last.0 >= index {
                self.0.truncate(k);
            } else {
                last.1 = index - 1; // last.0 < index, so index >= 1
            }
        }
    }

    /// Removes every entry at or before `index`.
    pub fn remove_upto(&mut self, index: u64) {
        let k = self.0.partition_point(|r| r.1 <= index);
        self.0.drain(..k);
        if let Some(first) = self.0.first_mut() {
            if first.0 <= index {
                first.0 = index.saturating_add(1);
            }
        }
    }

    /// Sets the term of entries `first..=last` to `term`, replacing what
    /// was there and keeping everything else. Does nothing if
    /// `first > last`.
    pub fn assign(&mut self, first: u64, last: u64, term: u64) {
        if first > last {
            return;
        }
        // Runs entirely before `first` stay, runs entirely after `last`
        // stay; the ones in between are cut around the new run.
        let lo = self.0.partition_point(|r| r.1 < first);
        let hi = self.0.partition_point(|r| r.0 <= last);
        let mut middle: Vec<Run> = Vec::with_capacity(3);
        if let Some(&r) = self.0.get(lo).filter(|_| lo < hi) {
            if r.0 < first {
                middle.push((r.0, first - 1, r.2));
            }
        }
        middle.push((first, last, term));
        if hi > lo {
            let r = self.0[hi - 1];
            if r.1 > last {
                middle.push((last + 1, r.1, r.2));
            }
        }
        self.0.splice(lo..hi, middle);
        // Merge with equal-term neighbours that touch.
        let at = self.0.partition_point(|r| r.1 < first);
        let from = at.saturating_sub(1);
        let to = (at + 3).min(self.0.len());
        let mut merged: Vec<Run> = Vec::with_capacity(to - from);
        for &r in &self.0[from..to] {
            match merged.last_mut() {
                Some(p) if p.2 == r.2 && p.1.checked_add(1) == Some(r.0) => p.1 = r.1,
                _ => merged.push(r),
            }
        }
        self.0.splice(from..to, merged);
    }

    /// Copies runs `src` over this set, each run clipped to `first..=last`.
    pub fn assign_runs(&mut self, src: &[Run], first: u64, last: u64) {
        for &(a, b, t) in src {
            let (a, b) = (a.max(first), b.min(last));
            self.assign(a, b, t);
        }
    }

    /// The runs covering `first..=last`, clipped to it (gaps stay gaps).
    pub fn slice(&self, first: u64, last: u64) -> Vec<Run> {
        if first > last {
            return Vec::new();
        }
        let lo = self.0.partition_point(|r| r.1 < first);
        self.0[lo..]
            .iter()
            .take_while(|r| r.0 <= last)
            .map(|&(a, b, t)| (a.max(first), b.min(last), t))
            .collect()
    }

    /// The sub-ranges of `first..=last` that hold no entry.
    pub fn gaps(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if first > last {
            return out;
        }
        let mut next = first;
        for (a, b, _) in self.slice(first, last) {
            if a > next {
                out.push((next, a - 1));
            }
            match b.checked_add(1) {
                Some(n) => next = n,
                None => return out,
            }
        }
        if next <= last {
            out.push((next, last));
        }
        out
    }

    /// The number of runs.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs spelled out entry by entry, as a reference.
    fn expand(r: &Runs) -> Vec<(u64, u64)> {
        r.0.iter()
            .flat_map(|&(a, b, t)| (a..=b).map(move |i| (i, t)))
            .collect()
    }

    fn well_formed(r: &Runs) {
        for w in r.0.windows(2) {
            assert!(w[0].1 < w[1].0, "{r:?}");
            assert!(!(w[0].2 == w[1].2 && w[0].1 + 1 == w[1].0), "{r:?}");
        }
        for x in &r.0 {
            assert!(x.0 <= x.1, "{r:?}");
        }
    }

    #[test]
    fn runs_match_a_plain_vector() {
        // A small deterministic generator, no dependency needed.
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |m: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % m
        };
        for _ in 0..300 {
            let mut runs = Runs::new();
            let mut plain: std::collections::BTreeMap<u64, u64> = Default::default();
            for _ in 0..40 {
                let a = next(40);
                let b = a + next(8);
                let t = next(4);
                match next(4) {
                    0 => {
                        runs.truncate_from(a);
                        plain.retain(|&i, _| i < a);
                    }
                    1 => {
                        runs.remove_upto(a);
                        plain.retain(|&i, _| i > a);
                    }
                    _ => {
                        runs.assign(a, b, t);
                        for i in a..=b {
                            plain.insert(i, t);
                        }
                    }
                }
                well_formed(&runs);
                let want: Vec<(u64, u64)> = plain.iter().map(|(&i, &t)| (i, t)).collect();
                assert_eq!(expand(&runs), want);
                for i in 0..50 {
                    assert_eq!(runs.term_at(i), plain.get(&i).copied());
                }
                let (x, y) = (next(50), next(50));
                let sliced: Vec<(u64, u64)> = expand(&Runs(runs.slice(x, y)));
                let want: Vec<(u64, u64)> =
                    plain.range(x..=y.max(x)).map(|(&i, &t)| (i, t)).collect();
                if x <= y {
                    assert_eq!(sliced, want);
                    let gaps: Vec<u64> = runs
                        .gaps(x, y)
                        .into_iter()
                        .flat_map(|(a, b)| a..=b)
                        .collect();
                    let want: Vec<u64> = (x..=y).filter(|i| !plain.contains_key(i)).collect();
                    assert_eq!(gaps, want);
                }
            }
        }
    }

    #[test]
    fn runs_extreme_indices() {
        let mut r = Runs::new();
        r.assign(0, u64::MAX, 3);
        assert_eq!(r.term_at(u64::MAX), Some(3));
        r.assign(u64::MAX, u64::MAX, 4);
        r.truncate_from(0);
        assert!(r.is_empty());
        r.assign(5, u64::MAX, 1);
        r.remove_upto(u64::MAX);
        assert!(r.is_empty());
        r.assign(1, 10, 1);
        r.assign(5, 3, 9); // empty range: nothing
        assert_eq!(r.0, vec![(1, 10, 1)]);
        assert_eq!(r.gaps(0, u64::MAX), vec![(0, 0), (11, u64::MAX)]);
    }
}
