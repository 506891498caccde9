//! What can go wrong in an engine.

use std::path::PathBuf;

/// An engine failure: the engine's files cannot be trusted or reached.
/// A replica whose engine returns one stops serving; the group repairs it
/// from the others. Requests that are merely invalid are not errors but
/// [`super::Refusal`]s.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A sector's checksum does not match its bytes (a bit flip, a torn or
    /// misdirected write): the sector is never served.
    #[error("corrupt sector {sector} of slot {slot} in {path}")]
    CorruptSector {
        path: PathBuf,
        slot: u64,
        sector: u64,
    },
    /// A metadata file is damaged where it was known durable.
    #[error("corrupt engine metadata in {path}: {why}")]
    CorruptMeta { path: PathBuf, why: String },
    /// The directory holds no engine, or one of another format.
    #[error("{path}: {why}")]
    NotAnEngine { path: PathBuf, why: String },
    #[error("bad geometry: {0}")]
    Geometry(String),
    /// An export (a Raft snapshot being taken) is under way; one at a time.
    #[error("an export of this engine is already under way")]
    ExportBusy,
    /// An export stream that cannot be imported (damaged or hostile).
    #[error("bad engine export: {0}")]
    BadExport(String),
    /// The engine's own rules were broken (a bug): the replica stops
    /// rather than guess.
    #[error("engine invariant broken: {0}")]
    Invariant(String),
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.into();
        move |source| EngineError::Io { path, source }
    }
}
