//! Pools: named sets of disks (in a declared topology, the disks of one
//! media). Every disk is in exactly one pool; every BlockGroup belongs to
//! one pool and its replicas live on that pool's disks only; every volume
//! belongs to one pool and its blocks go to that pool's groups. Placement,
//! repair, drain, spread and capacity balance all work within a pool (a
//! server with disks in two pools is a member of both, with a replica
//! count in each).
//!
//! A cluster that declares no pool has one, [`DEFAULT_POOL`], holding
//! every disk.

use std::fmt;

/// The pool of a disk, group or volume that names none.
pub const DEFAULT_POOL: &str = "default";
/// The longest pool name.
pub const MAX_POOL_NAME: usize = 64;

/// For serde: a missing pool is the default one.
pub fn default_pool() -> String {
    DEFAULT_POOL.to_string()
}

/// For serde: whether `pool` is the default (left out when serialized).
pub fn is_default(pool: &str) -> bool {
    pool == DEFAULT_POOL
}

/// A pool name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPoolName(pub String);

impl fmt::Display for BadPoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool {:?}: 1 to {MAX_POOL_NAME} characters of A-Z a-z 0-9 . _ -",
            self.0.chars().take(80).collect::<String>()
        )
    }
}

impl std::error::Error for BadPoolName {}

/// Checks a pool name: 1 to [`MAX_POOL_NAME`] characters of A-Z a-z 0-9
/// . _ - (it appears in files, status lines and URLs).
pub fn check_name(name: &str) -> Result<(), BadPoolName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BadPoolName(name.to_string()))
    }
}

/// The pool of disk `i` given a server's per-disk pool list (empty: every
/// disk in the default pool, what a server that names none registers).
pub fn of_disk(pools: &[String], i: usize) -> &str {
    if pools.is_empty() {
        DEFAULT_POOL
    } else {
        pools.get(i).map_or(DEFAULT_POOL, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        check_name("ssd").unwrap();
        check_name("fast.1_a-b").unwrap();
        for bad in ["", "a b", "é", &"x".repeat(MAX_POOL_NAME + 1)] {
            let e = check_name(bad).unwrap_err();
            assert!(e.to_string().contains("1 to 64 characters"), "{e}");
        }
    }

    #[test]
    fn a_server_naming_no_pool_has_every_disk_in_the_default() {
        assert_eq!(of_disk(&[], 3), DEFAULT_POOL);
        let p = vec!["ssd".to_string(), "hdd".to_string()];
        assert_eq!((of_disk(&p, 0), of_disk(&p, 1)), ("ssd", "hdd"));
    }
}
