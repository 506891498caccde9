//! The kinds of faults the simulator can inject, and their parsing.

use std::fmt;
use std::str::FromStr;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Some messages take 20-200 ms longer.
    Delay,
    /// Some messages are lost.
    Drop,
    /// Some messages arrive twice.
    Duplicate,
    /// Latency jitters widely, so messages overtake each other.
    Reorder,
    /// The nodes split into two groups that cannot talk.
    Partition,
    /// Some directed links are cut: A hears B but B does not hear A.
    Asymmetric,
    /// A node crashes (keeping only what it persisted) and later restarts.
    Crash,
    /// A node stops (ticks and messages wait) and later resumes.
    Pause,
    /// A node's clock runs up to 10% fast or slow (ticks every 9 to 11 ms).
    TickRate,
    /// A node's disk fails for a while: reads, writes and syncs return EIO
    /// now and then, or the disk is full. A crash there also loses, keeps
    /// part of, or tears what was not synced, and a crash may cut the power
    /// in the middle of a write.
    Disk,
}

impl FaultKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Delay,
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Partition,
        FaultKind::Asymmetric,
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::TickRate,
        FaultKind::Disk,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::Drop => "drop",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Partition => "partition",
            FaultKind::Asymmetric => "asymmetric",
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::TickRate => "tickrate",
            FaultKind::Disk => "disk",
        }
    }

    /// Whether the fault acts on messages in flight (rather than on nodes
    /// or links).
    pub fn is_network_weather(self) -> bool {
        matches!(
            self,
            FaultKind::Delay | FaultKind::Drop | FaultKind::Duplicate | FaultKind::Reorder
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FaultSet(u32);

impl FaultSet {
    /// No faults.
    pub const NONE: FaultSet = FaultSet(0);

    /// Every fault kind.
    pub fn all() -> FaultSet {
        FaultKind::ALL
            .into_iter()
            .fold(FaultSet::NONE, FaultSet::with)
    }
    /// This set plus `k`.
    pub fn with(self, k: FaultKind) -> FaultSet {
        FaultSet(self.0 | 1 << k as u32)
    }
    /// Whether `k` is in the set.
    pub fn has(self, k: FaultKind) -> bool {
        self.0 & (1 << k as u32) != 0
    }
    /// The kinds in the set, in `ALL` order.
    pub fn kinds(self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| self.has(*k))
            .collect()
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::all() {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<_> = self.kinds().iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for FaultSet {
    type Err = String;

    /// Parses `all`, `none`, or a comma list of kind names.
    fn from_str(s: &str) -> Result<FaultSet, String> {
        match s.trim() {
            "all" => return Ok(FaultSet::all()),
            "none" | "" => return Ok(FaultSet::NONE),
            _ => {}
        }
        let mut set = FaultSet::NONE;
        for part in s.split(',') {
            let part = part.trim();
            let kind = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == part)
                .ok_or_else(|| {
                    let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "unknown fault kind '{part}' (known: all, none, {})",
                        names.join(", ")
                    )
                })?;
            set = set.with(kind);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        let s: FaultSet = "drop, crash".parse().unwrap();
        assert!(s.has(FaultKind::Drop) && s.has(FaultKind::Crash));
        assert!(!s.has(FaultKind::Pause));
        assert_eq!(s.to_string(), "drop,crash");
        assert_eq!("all".parse::<FaultSet>().unwrap(), FaultSet::all());
        let err = "drop,flood".parse::<FaultSet>().unwrap_err();
        assert!(err.contains("flood") && err.contains("partition"), "{err}");
    }
}
