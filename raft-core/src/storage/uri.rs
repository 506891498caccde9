//! Choosing a node's storage by URI.
//!
//! A deployment names its storage in configuration (`memory://`,
//! `local:///var/lib/cds/node1`); this module turns that string into a
//! [`NodeStorage`], and refuses anything it cannot open with a message that
//! says what was expected, rather than guessing.

use std::path::PathBuf;
use std::str::FromStr;

use super::{NodeStorage, StorageError};

/// A parsed storage URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUri {
    /// `memory://`: nothing survives the process.
    Memory,
    /// `local://PATH`: files under the directory `PATH` (created if
    /// missing). `local:///abs/dir` is absolute, `local://rel/dir` relative
    /// to the working directory.
    Local(PathBuf),
}

impl StorageUri {
    /// Parses `uri`; an unknown scheme, a missing `://` or a missing path is
    /// an error naming the URI and what was expected.
    pub fn parse(uri: &str) -> Result<StorageUri, StorageError> {
        let bad = |reason: &str| StorageError::Uri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(bad(
                "expected SCHEME://..., e.g. memory:// or local:///var/lib/node",
            ));
        };
        match scheme {
            "memory" if rest.is_empty() => Ok(StorageUri::Memory),
            "memory" => Err(bad("memory:// takes no path")),
            "local" if rest.is_empty() => Err(bad("local:// needs a directory: local://PATH")),
            "local" => Ok(StorageUri::Local(PathBuf::from(rest))),
            _ => Err(bad(&format!(
                "unknown scheme {scheme:?} (supported: memory, local)"
            ))),
        }
    }

    /// Opens (creating if needed) the storage this URI names, repairing
    /// what a crash left behind (see [`NodeStorage::recovery`]).
    pub fn open(&self) -> Result<NodeStorage, StorageError> {
        match self {
            StorageUri::Memory => Ok(NodeStorage::memory(Vec::new())),
            #[cfg(feature = "local")]
            StorageUri::Local(path) => {
                super::local::open(path, &super::local::LocalOptions::default())
            }
            #[cfg(not(feature = "local"))]
            StorageUri::Local(path) => Err(StorageError::Uri {
                uri: format!("local://{}", path.display()),
                reason: "local storage needs raft-core's `local` feature".into(),
            }),
        }
    }
}

impl FromStr for StorageUri {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<StorageUri, StorageError> {
        StorageUri::parse(s)
    }
}

/// Opens the storage `uri` names: `memory://` or `local://PATH`. A new
/// store has an empty membership: set the group's voters with
/// [`NodeStorage::set_conf_state`] before the first `Ready`.
pub fn open(uri: &str) -> Result<NodeStorage, StorageError> {
    StorageUri::parse(uri)?.open()
}
