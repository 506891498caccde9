//! Files and directories that hold the cluster token.
//!
//! `cluster.json` and every node's `config.json` carry the token the
//! transport handshake checks, so they are written owner-only (0600, in
//! 0700 directories) and a node or command refuses to read one that others
//! can read: a token other local users can read keeps nobody out. The one
//! rule for "private" lives here.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{bail, Context, Result};

/// The shortest token accepted: 16 characters (`cdsctl kv up` makes 32 hex
/// digits, 128 random bits).
pub const MIN_TOKEN_LEN: usize = 16;

/// Mode bits of a secret file or its directory that must be clear: nothing
/// for group or others.
const SHARED_BITS: u32 = 0o077;

/// Refuses an empty or short token.
pub fn check_token(token: &str) -> Result<()> {
    if token.len() < MIN_TOKEN_LEN {
        bail!(Invalid,
            "token: {} characters, at least {MIN_TOKEN_LEN} are needed (cdsctl kv up makes 32 random hex digits)",
            token.len()
        );
    }
    Ok(())
}

/// Writes `path` owner-only (0600) through a temporary file, fsync and a
/// rename, so a reader never sees half a file nor a moment when it is
/// readable by others.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Creates `dir` (and its parents) and makes it owner-only (0700).
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (0700)", dir.display()))
}

/// Refuses a secret file that group or others may read or write.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & SHARED_BITS != 0 {
        bail!(Invalid,
            "{} holds a secret (the cluster token or a private key) but is open to other users (mode {mode:03o}); \
             make it private with: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Reads a private JSON file (a config holding a token): refused when
/// others can read it, or when it does not parse as `T`.
pub fn read_private_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    check_private(path).with_context(|| format!("refusing the config file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_dirs_are_owner_only_and_shared_ones_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("config.json");
        write_private(&f, b"{}").unwrap();
        assert_eq!(mode(&f), 0o600);
        check_private(&f).unwrap();
        // Rewriting keeps it private, and leaves no temporary file.
        write_private(&f, b"{\"a\":1}").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&f).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn empty_and_short_tokens_are_refused() {
        for t in ["", "t", "secret", "0123456789abcde"] {
            let e = check_token(t).unwrap_err().to_string();
            assert!(e.contains("at least 16"), "{t:?}: {e}");
        }
        check_token("0123456789abcdef").unwrap();
    }
}
