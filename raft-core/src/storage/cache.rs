//! The most recent log entries, kept in memory by [`super::NodeStorage`].
//!
//! A leader replicates and applies entries right after appending them; on
//! a file-backed log each such read would decode and checksum records again
//! (and go to disk once the page cache is cold). The cache holds the tail of
//! the log, bounded in bytes, so those reads never touch the store. It is
//! only ever a copy: every write goes to the store first, and anything the
//! cache does not hold is read from the store.
//!
//! Entries are held, not copied: an entry's data is a shared buffer (the
//! proposal's on a leader, a slice of the received frame on a follower), so
//! caching it costs a reference. A follower's cached entry keeps the whole
//! frame it arrived in alive. Usually a frame's entries are all cached
//! together and leave together (oldest first), so [`Entry::size`] counts
//! nearly all a frame holds; an `Append` that was partly a duplicate (a
//! resend) also keeps the bytes of the entries the follower skipped, up to
//! one message batch per such resend, until its entries leave the cache.

use std::collections::VecDeque;

use crate::core::Entry;

/// Bytes of entries a [`super::NodeStorage`] keeps in memory by default.
pub const DEFAULT_ENTRY_CACHE_BYTES: u64 = 16 << 20;

/// A contiguous run of the log's latest entries, at most `max_bytes` of them
/// (by [`Entry::size`]), but always the last appended batch's last entry.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
}

impl EntryCache {
    pub(crate) fn new(max_bytes: u64) -> EntryCache {
        EntryCache {
            max_bytes,
            ..EntryCache::default()
        }
    }

    /// The most bytes of entries kept.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Records entries just appended to the store (consecutive indexes).
    /// Cached entries at or after `ents[0].index` were replaced by them; a
    /// batch that does not continue the cached run starts a new one.
    pub(crate) fn append(&mut self, ents: &[Entry]) {
        let Some(head) = ents.first() else { return };
        if self.max_bytes == 0 {
            return;
        }
        match self.first_index() {
            Some(first)
                if head.index >= first && head.index <= first + self.entries.len() as u64 =>
            {
                let keep = (head.index - first) as usize;
                for e in self.entries.drain(keep..) {
                    self.bytes -= e.size();
                }
            }
            _ => self.clear(),
        }
        for e in ents {
            self.bytes += e.size();
            self.entries.push_back(e.clone());
        }
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size();
            }
        }
    }

    /// Forgets entries at or below `upto` (compacted away).
    pub(crate) fn compact(&mut self, upto: u64) {
        while self.first_index().is_some_and(|i| i <= upto) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size();
            }
        }
    }

    /// Forgets everything (the log was replaced by a snapshot).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The term of entry `index`, if cached.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        let first = self.first_index()?;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(i).map(|e| e.term)
    }

    /// Entries `lo..hi` with the same size rule as [`super::LogStore::entries`]
    /// (the first entry always, then as many as fit in `max_bytes`), if the
    /// cache holds all of `lo..hi`; `None` otherwise.
    pub(crate) fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let end = first + self.entries.len() as u64;
        if lo < first || hi > end || lo >= hi {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self
            .entries
            .range((lo - first) as usize..(hi - first) as usize)
        {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::EntryKind;

    fn ent(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![index as u8; len].into(),
        }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&[ent(5, 1, 8), ent(6, 1, 8), ent(7, 2, 8)]);
        assert_eq!(
            indexes(&c.entries(5, 8, u64::MAX).unwrap()),
            [(5, 1), (6, 1), (7, 2)]
        );
        assert_eq!(indexes(&c.entries(6, 7, u64::MAX).unwrap()), [(6, 1)]);
        assert!(c.entries(4, 6, u64::MAX).is_none(), "4 is not cached");
        assert!(c.entries(7, 9, u64::MAX).is_none(), "8 is not cached");
        assert_eq!(c.term(7), Some(2));
        assert_eq!(c.term(4), None);
        assert_eq!(c.term(8), None);
    }

    #[test]
    fn the_size_limit_matches_the_stores() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&[ent(1, 1, 76), ent(2, 1, 76), ent(3, 1, 76)]); // 100 bytes each
        assert_eq!(c.entries(1, 4, 0).unwrap().len(), 1, "always one entry");
        assert_eq!(c.entries(1, 4, 199).unwrap().len(), 1);
        assert_eq!(c.entries(1, 4, 200).unwrap().len(), 2);
        assert_eq!(c.entries(1, 4, 300).unwrap().len(), 3);
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail_and_a_gap_starts_over() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&[ent(1, 1, 1), ent(2, 1, 1), ent(3, 1, 1)]);
        c.append(&[ent(2, 2, 1)]);
        assert_eq!(
            indexes(&c.entries(1, 3, u64::MAX).unwrap()),
            [(1, 1), (2, 2)]
        );
        assert!(c.entries(3, 4, u64::MAX).is_none(), "3 was replaced");
        c.append(&[ent(3, 2, 1)]);
        assert_eq!(c.term(3), Some(2));
        c.append(&[ent(10, 3, 1)]);
        assert_eq!(c.term(3), None, "a batch that does not follow starts over");
        assert_eq!(c.term(10), Some(3));
    }

    #[test]
    fn it_stays_within_its_bytes_and_forgets_compacted_entries() {
        let mut c = EntryCache::new(250);
        for i in 1..=10 {
            c.append(&[ent(i, 1, 76)]);
        }
        assert!(c.bytes <= 250);
        assert_eq!(c.first_index(), Some(9));
        c.compact(9);
        assert_eq!(c.first_index(), Some(10));
        c.clear();
        assert_eq!(c.term(10), None);
        // A zero budget caches nothing.
        let mut none = EntryCache::new(0);
        none.append(&[ent(1, 1, 1)]);
        assert_eq!(none.term(1), None);
    }
}
