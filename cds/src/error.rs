//! The one error type of the `cds` library.
//!
//! Every public function of the crate returns [`Error`]. Its variants say
//! what kind of thing failed (a file, a JSON document, TLS material, a node
//! that did not answer or refused, a bad setting, a cluster in the wrong
//! state), so a caller can match on them; its text says, on one line, what
//! was being done and why it failed ("reading /x/cluster.json: permission
//! denied"). The cause is part of that text rather than a separate
//! [`std::error::Error::source`], so a printer that walks sources (anyhow's
//! `{:#}`, say) does not repeat it.

use std::fmt::Display;

/// What went wrong in a `cds` call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file, socket or process operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A JSON document could not be encoded or parsed.
    #[error("{what}: {error}")]
    Json {
        /// Which document, and what was being done with it.
        what: String,
        /// What serde said.
        error: serde_json::Error,
    },
    /// TLS material could not be made, read or used.
    #[error("{what}: {error}")]
    Tls {
        /// What was being done.
        what: String,
        /// What the TLS library said.
        error: String,
    },
    /// The Raft runtime (storage, transport, group host, node) refused or
    /// failed.
    #[error("{what}: {error}")]
    Runtime {
        /// What was being done.
        what: String,
        /// What the runtime said.
        error: String,
    },
    /// A node did not answer an HTTP request (refused, reset, timed out).
    #[error("{url} did not answer: {error}")]
    NoAnswer {
        /// The request's URL.
        url: String,
        /// What the HTTP client said.
        error: String,
    },
    /// A node answered, but not with success.
    #[error("{what}: {status} {text}")]
    Refused {
        /// The request, or the operation it was part of.
        what: String,
        /// The HTTP status of the answer.
        status: u16,
        /// The answer's error text (its JSON `error`, or its body).
        text: String,
    },
    /// A setting, an argument or a file's content is not acceptable; the
    /// text says which and what would be.
    #[error("{0}")]
    Invalid(String),
    /// The cluster or a node is not in a state that allows the operation
    /// (not running, no leader, a wait that ran out); the text says which.
    #[error("{0}")]
    Cluster(String),
    /// A node id that the cluster does not have.
    #[error("unknown node id {id}: this cluster has nodes {known}")]
    UnknownNode {
        /// The id asked for.
        id: u64,
        /// The ids it has, as "1, 2, 3".
        known: String,
    },
    /// Something failed while doing something larger.
    #[error("{what}: {error}")]
    Context {
        /// The larger thing.
        what: String,
        /// Why it failed.
        error: Box<Error>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error that can be told what was being done when it happened.
pub trait Describe {
    /// This error, as part of `what`.
    fn during(self, what: String) -> Error;
}

impl Describe for Error {
    fn during(self, what: String) -> Error {
        Error::Context {
            what,
            error: Box::new(self),
        }
    }
}

impl Describe for std::io::Error {
    fn during(self, what: String) -> Error {
        Error::Io { what, error: self }
    }
}

impl Describe for serde_json::Error {
    fn during(self, what: String) -> Error {
        Error::Json { what, error: self }
    }
}

/// Errors kept as their text in a variant (`Describe` for each).
macro_rules! describe_as_text {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Describe for $ty {
            fn during(self, what: String) -> Error {
                Error::$variant {
                    what,
                    error: self.to_string(),
                }
            }
        }
    )*};
}

describe_as_text! {
    rcgen::Error => Tls,
    tokio_rustls::rustls::Error => Tls,
    rustls_pki_types::pem::Error => Tls,
    raft_core::runtime::transport::TransportError => Runtime,
    raft_core::runtime::host::HostError => Runtime,
    raft_core::storage::StorageError => Runtime,
}

/// Adds what was being done to a failed result (the crate's counterpart
/// of anyhow's `Context`, producing typed errors).
pub trait Context<T> {
    /// Fails with `what` and the cause.
    fn context(self, what: impl Display) -> Result<T>;
    /// Fails with `what()` and the cause; `what` runs only on failure.
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Describe> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| e.during(what.to_string()))
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.during(what().to_string()))
    }
}

/// Returns `Err(Error::KIND(format!(...)))`: `bail!(Invalid, "...")`.
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$kind(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_holds_the_whole_chain_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Err::<(), _>(io)
            .context("reading x")
            .context("loading the cluster")
            .unwrap_err();
        assert_eq!(e.to_string(), "loading the cluster: reading x: gone");
        assert!(std::error::Error::source(&e).is_none());
    }
}
