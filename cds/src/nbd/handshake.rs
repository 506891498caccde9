//! The fixed newstyle handshake: the greeting, then options until the
//! client picks an export (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`), aborts,
//! or leaves. Every option this server does not know gets
//! `NBD_REP_ERR_UNSUP`; a malformed one gets `NBD_REP_ERR_INVALID`; only
//! a broken stream (wrong magic, unknown client flags, oversized option)
//! or an `NBD_OPT_EXPORT_NAME` it cannot satisfy (which has no error
//! reply) ends the session.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::export::Export;
use super::limits::{MAX_OPTIONS, MAX_OPTION_BYTES, MAX_PAYLOAD};
use super::proto::{self, OPTION_HEADER};

/// What a session negotiated for its transmission phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Session {
    /// `NBD_OPT_STRUCTURED_REPLY`: reads are answered in chunks (data and
    /// holes), errors with messages.
    pub structured: bool,
    /// `base:allocation` was selected for the export: block status works.
    pub allocation: bool,
}

/// How a handshake ended.
#[derive(Debug)]
pub enum Handshake {
    /// Transmission begins on this export.
    Go(Arc<Export>, Session),
    /// The client aborted (answered) or left.
    Ended,
}

/// The exports a server offers, by name; the empty name is the first.
#[derive(Debug, Default)]
pub struct Exports {
    pub list: Vec<Arc<Export>>,
}

impl Exports {
    /// The export named `name` (the empty name: the default, the first).
    pub fn find(&self, name: &str) -> Option<Arc<Export>> {
        if name.is_empty() {
            return self.list.first().cloned();
        }
        self.list.iter().find(|e| e.name() == name).cloned()
    }
}

/// Why a handshake ended the session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8]) -> std::io::Result<()> {
    s.write_all(b).await
}

/// Runs the server's side of the handshake on `s`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    exports: &Exports,
) -> Result<Handshake, HandshakeError> {
    s.write_all(&proto::greeting()).await?;
    s.flush().await?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags).await?;
    let no_zeroes =
        proto::client_flags(u32::from_be_bytes(flags)).map_err(HandshakeError::Protocol)?;
    let mut session = Session::default();
    // The export `base:allocation` was selected for, if any.
    let mut meta_for: Option<String> = None;
    for _ in 0..MAX_OPTIONS {
        let mut h = [0u8; OPTION_HEADER];
        match s.read_exact(&mut h).await {
            Ok(_) => {}
            // Leaving during option haggling is the client's right.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Handshake::Ended),
            Err(e) => return Err(e.into()),
        }
        let h = proto::option_header(&h).map_err(HandshakeError::Protocol)?;
        if h.len > MAX_OPTION_BYTES {
            return Err(HandshakeError::Protocol(format!(
                "option {} carries {} bytes (at most {MAX_OPTION_BYTES})",
                h.option, h.len
            )));
        }
        let mut data = vec![0u8; h.len as usize];
        s.read_exact(&mut data).await?;
        let opt = h.option;
        match opt {
            proto::OPT_EXPORT_NAME => {
                // No error reply exists for this option: an unknown name
                // (or a volume that cannot be reached) ends the session.
                let name = String::from_utf8(data)
                    .map_err(|_| HandshakeError::Protocol("export name is not UTF-8".into()))?;
                let export = exports
                    .find(&name)
                    .ok_or_else(|| HandshakeError::Protocol(format!("no export named {name:?}")))?;
                let size = export
                    .refresh()
                    .await
                    .map_err(|e| HandshakeError::Protocol(format!("export {name:?}: {e}")))?;
                reply(
                    s,
                    &proto::export_name_reply(size, export.flags(), no_zeroes),
                )
                .await?;
                s.flush().await?;
                session.allocation = meta_for.as_deref() == Some(name.as_str());
                return Ok(Handshake::Go(export, session));
            }
            proto::OPT_ABORT => {
                // The client may already have gone; that is fine.
                let _ = reply(s, &proto::option_reply(opt, proto::REP_ACK, &[])).await;
                let _ = s.flush().await;
                return Ok(Handshake::Ended);
            }
            proto::OPT_LIST => {
                if !data.is_empty() {
                    let m = "NBD_OPT_LIST takes no data";
                    reply(s, &proto::option_error(opt, proto::REP_ERR_INVALID, m)).await?;
                } else {
                    for e in &exports.list {
                        reply(s, &proto::server_reply(e.name(), &e.description())).await?;
                    }
                    reply(s, &proto::option_reply(opt, proto::REP_ACK, &[])).await?;
                }
            }
            proto::OPT_INFO | proto::OPT_GO => {
                if let Some((e, name)) = info(s, opt, &data, exports).await? {
                    s.flush().await?;
                    // Contexts selected for another export do not carry over.
                    session.allocation = meta_for.as_deref() == Some(name.as_str());
                    return Ok(Handshake::Go(e, session));
                }
            }
            proto::OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    session.structured = true;
                    reply(s, &proto::option_reply(opt, proto::REP_ACK, &[])).await?;
                } else {
                    let m = "NBD_OPT_STRUCTURED_REPLY takes no data";
                    reply(s, &proto::option_error(opt, proto::REP_ERR_INVALID, m)).await?;
                }
            }
            proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => {
                let selected = meta_context(s, opt, &data, exports, session.structured).await?;
                if opt == proto::OPT_SET_META_CONTEXT {
                    meta_for = selected;
                }
            }
            proto::OPT_STARTTLS => {
                let m = "this server does not offer TLS (it listens on loopback unless told)";
                reply(s, &proto::option_error(opt, proto::REP_ERR_POLICY, m)).await?;
            }
            other => {
                let m = format!("option {other} is not supported by this server");
                reply(s, &proto::option_error(opt, proto::REP_ERR_UNSUP, &m)).await?;
            }
        }
        s.flush().await?;
    }
    Err(HandshakeError::Protocol(format!(
        "more than {MAX_OPTIONS} options in one handshake"
    )))
}

/// Answers `NBD_OPT_LIST_META_CONTEXT` or `NBD_OPT_SET_META_CONTEXT`.
/// The one context is `base:allocation`; a listing with no query or the
/// query `base:` names it. Returns the export it was selected for, when
/// a SET selected it.
async fn meta_context<S: AsyncWrite + Unpin>(
    s: &mut S,
    opt: u32,
    data: &[u8],
    exports: &Exports,
    structured: bool,
) -> Result<Option<String>, HandshakeError> {
    if !structured {
        let m = "metadata contexts need structured replies, negotiated first";
        reply(s, &proto::option_error(opt, proto::REP_ERR_INVALID, m)).await?;
        return Ok(None);
    }
    let req = match proto::meta_request(data) {
        Ok(r) => r,
        Err(why) => {
            reply(s, &proto::option_error(opt, proto::REP_ERR_INVALID, &why)).await?;
            return Ok(None);
        }
    };
    if exports.find(&req.name).is_none() {
        let m = format!("no export named {:?}", req.name);
        reply(s, &proto::option_error(opt, proto::REP_ERR_UNKNOWN, &m)).await?;
        return Ok(None);
    }
    let listing = opt == proto::OPT_LIST_META_CONTEXT;
    let matches = req
        .queries
        .iter()
        .any(|q| q == proto::BASE_ALLOCATION || (listing && q == "base:"))
        || (listing && req.queries.is_empty());
    if matches {
        let r = proto::meta_context_reply(opt, proto::BASE_ALLOCATION_ID, proto::BASE_ALLOCATION);
        reply(s, &r).await?;
    }
    reply(s, &proto::option_reply(opt, proto::REP_ACK, &[])).await?;
    Ok((matches && !listing).then_some(req.name))
}

/// Answers `NBD_OPT_INFO` or `NBD_OPT_GO`; returns the export (and the
/// name it was asked by) when a GO succeeded (transmission begins).
async fn info<S: AsyncWrite + Unpin>(
    s: &mut S,
    opt: u32,
    data: &[u8],
    exports: &Exports,
) -> Result<Option<(Arc<Export>, String)>, HandshakeError> {
    let req = match proto::go_request(data) {
        Ok(r) => r,
        Err(why) => {
            reply(s, &proto::option_error(opt, proto::REP_ERR_INVALID, &why)).await?;
            return Ok(None);
        }
    };
    let Some(export) = exports.find(&req.name) else {
        let m = format!("no export named {:?}", req.name);
        reply(s, &proto::option_error(opt, proto::REP_ERR_UNKNOWN, &m)).await?;
        return Ok(None);
    };
    // Each session learns the size again: a resize shows on reconnect.
    let size = match export.refresh().await {
        Ok(size) => size,
        Err(e) => {
            let m = format!("export {:?} cannot be served now: {e}", req.name);
            reply(s, &proto::option_error(opt, proto::REP_ERR_UNKNOWN, &m)).await?;
            return Ok(None);
        }
    };
    reply(s, &proto::info_export(opt, size, export.flags())).await?;
    // Sent whether asked for or not (the protocol allows it): any
    // alignment works, 4 KiB is what the volume stores.
    reply(s, &proto::info_block_size(opt, 1, 4096, MAX_PAYLOAD)).await?;
    for kind in req.infos {
        match kind {
            proto::INFO_NAME => reply(s, &proto::info_string(opt, kind, export.name())).await?,
            proto::INFO_DESCRIPTION => {
                reply(s, &proto::info_string(opt, kind, &export.description())).await?
            }
            // Already sent, or unknown (ignored, as the protocol says).
            _ => {}
        }
    }
    reply(s, &proto::option_reply(opt, proto::REP_ACK, &[])).await?;
    Ok((opt == proto::OPT_GO).then_some((export, req.name)))
}
