//! The block store's data path under the seeded simulator (`cds::sim`):
//! clean seeds pass, and each injected bug is caught by some seed.

use cds::sim::{run, SimConfig};

#[test]
fn seeds_pass_under_faults() {
    let mut failed = Vec::new();
    let (mut rot, mut repaired) = (0, 0);
    for seed in 1..=40 {
        let o = run(&SimConfig::new(seed));
        println!("{o}");
        rot += o.stats.bit_rot;
        repaired += o.stats.repaired;
        if o.failure.is_some() {
            failed.push(o.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Bit rot is among the faults, and corrupt sectors were met and
    // repaired from other replicas (never served: the checks above).
    assert!(
        rot > 0 && repaired > 0,
        "{rot} bits rotted, {repaired} sectors repaired"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let a = run(&SimConfig::new(7));
    let b = run(&SimConfig::new(7));
    assert_eq!(a, b);
}

#[cfg(feature = "bug-injection")]
mod bugs {
    use cds::sim::{run, Bug, SimConfig};

    /// The first of `seeds` that catches `bug`, with its verdict.
    fn caught(bug: Bug, seeds: std::ops::RangeInclusive<u64>) -> Option<String> {
        seeds.into_iter().find_map(|seed| {
            let mut cfg = SimConfig::new(seed);
            cfg.bug = Some(bug);
            run(&cfg).failure.map(|f| format!("seed {seed}: {f}"))
        })
    }

    #[test]
    fn follower_reads_are_caught() {
        let why = caught(Bug::FollowerRead, 1..=20).expect("follower reads went unnoticed");
        println!("{why}");
    }

    #[test]
    fn acks_on_step_down_are_caught() {
        let why = caught(Bug::AckOnStepDown, 1..=20).expect("acks on step-down went unnoticed");
        println!("{why}");
    }

    #[test]
    fn a_flush_that_skips_the_data_sync_is_caught() {
        let why = caught(Bug::SkipSlotSync, 1..=30).expect("the skipped sync went unnoticed");
        println!("{why}");
    }

    #[test]
    fn copy_on_write_skipped_on_a_partial_write_is_caught() {
        let why = caught(Bug::SkipCow, 1..=20).expect("a snapshot changed under a write unnoticed");
        println!("{why}");
    }

    #[test]
    fn a_corrupt_sector_served_as_zeros_is_caught() {
        let why =
            caught(Bug::CorruptAsZeros, 1..=20).expect("zeros for a corrupt sector went unnoticed");
        println!("{why}");
    }
}
