//! The TCP transport: carries [`Envelope`]s between processes.
//!
//! It exists so that a process hosting many Raft groups talks to each peer
//! over exactly one outbound connection (every envelope carries its group),
//! and so that a misbehaving network or peer costs bounded memory and bounded
//! noise: per-peer send queues have a limit in envelopes and one in bytes
//! ([`TransportConfig::queue_limit`], [`TransportConfig::queue_bytes`]) and
//! drop (counting) at either,
//! a bad frame closes only the connection it came on, a refused or
//! unreachable peer produces one event per change of state, not one per
//! retry, and every buffer read from the network is checked against a named
//! limit before it is allocated.
//!
//! # What an inbound connection can cost
//!
//! - Before the handshake: one task, a slot of
//!   [`TransportConfig::max_inbound_connections`], at most
//!   [`MAX_HANDSHAKE_FRAME_BYTES`] of buffer, for at most
//!   [`TransportConfig::handshake_timeout`].
//! - A hello is accepted only with the cluster id and token, addressed to
//!   this node, and from one of its peers ([`TransportConfig::peers`], and
//!   those added by [`TransportHandle::set_peer`] when a node joins): any
//!   other id is refused with [`Refusal::UnknownPeer`] before an envelope is
//!   read. A peer has one inbound connection at a time (a newer one
//!   replaces it).
//! - After it: a frame's memory is taken in pieces of [`READ_CHUNK_BYTES`]
//!   as its bytes arrive, so a header declaring [`MAX_FRAME_BYTES`] buys
//!   nothing; all connections' frame buffers together stay within
//!   [`TransportConfig::max_buffered_bytes`] (a connection whose next piece
//!   would pass it is closed); a buffer grown by a large frame is given back
//!   after it. A connection on which no frame begins for
//!   [`TransportConfig::idle_timeout`], or whose started frame delivers
//!   nothing for [`TransportConfig::stall_timeout`], is closed.
//! - Every refusal, bad frame, timeout and budget closure is counted in
//!   [`TransportStats`] (the node shows them in `/metrics` and, rate-limited,
//!   in its log).
//! - A frame read whole becomes the envelope's buffer: the entries decoded
//!   from it slice it ([`codec::decode_shared`]), so no payload is copied
//!   on the way in. It stays counted in the frame budget until handed to
//!   the receiver, then in [`TransportConfig::inbound_bytes`] until the
//!   receiver takes it ([`Inbound::recv`]); a reader that would pass that
//!   waits (TCP pushes back on the sender, whose own queue then drops).
//!
//! # What a slow or absent peer can cost
//!
//! Its queue: at most [`TransportConfig::queue_limit`] envelopes and
//! [`TransportConfig::queue_bytes`] bytes (by [`codec::encoded_len`]),
//! counted when an envelope is queued and given back once it is written
//! (or dropped with a lost connection). Past either, sends to it drop and
//! count ([`TransportStats::dropped_queue_full`],
//! [`TransportStats::dropped_queue_bytes`]). Payloads are shared, so an
//! `Append` queued for several peers is one buffer counted in each queue.
//!
//! Each direction between two nodes has its own connection: a node writes to
//! a peer on the connection it opened, and reads what the peer sends on the
//! connection the peer opened. That keeps both sides simple (a writer task
//! and a reader task, no demultiplexing of replies).
//!
//! # Frames
//!
//! ```text
//! frame = len:u32 crc:u32 version:u8 kind:u8 payload
//! ```
//!
//! Little-endian. `len` counts the bytes after `crc` (version, kind and
//! payload), `crc` is the CRC-32C ([`crate::core::checksum`]) of those bytes.
//! `version` is [`PROTOCOL_VERSION`]. Kinds: 1 hello, 2 hello-ack,
//! 3 envelope (payload: [`codec::encode`]).
//!
//! # Handshake
//!
//! The connecting node sends a hello (`cluster_id:u64 from:u64 to:u64
//! token_len:u16 token`); the accepting node answers with a hello-ack
//! (`status:u8 node_id:u64`, status 0 = accepted, otherwise a [`Refusal`])
//! and, on refusal, closes. Only after an accepted handshake does the
//! connecting node send envelopes. The token is compared in constant time.
//! Without TLS the token crosses the network in clear: the transport assumes a trusted
//! network (or a tunnel) and uses the token to keep clusters apart, not to
//! resist an eavesdropper.
//!
//! # TLS
//!
//! With [`TransportConfig::tls`] set ([`TransportTls`]), every connection
//! is TLS 1.3 with both sides authenticated by the cluster's CA, and the
//! hello above runs inside it (defense in depth: a stolen certificate alone
//! does not join the cluster, nor a leaked token alone). Each node's
//! certificate names it ([`node_cert_name`]): the connecting side checks
//! that the server's certificate names the peer it meant to reach, and the
//! accepting side refuses a hello whose node id the client's certificate
//! does not name ([`Refusal::Certificate`]). A client that does not speak
//! TLS, or presents a certificate of another CA, is refused before any
//! frame is read ([`Refusal::Tls`]).
//!
//! A change of [`codec::CODEC_VERSION`] must come with a new
//! [`PROTOCOL_VERSION`], so mixed versions are refused at the handshake
//! instead of failing on the first envelope.
//!
//! # Faults and observability
//!
//! A [`FaultFilter`] set through [`TransportHandle::set_filter`] drops or
//! delays envelopes per peer (how an admin request partitions a node).
//! There is no logging to stderr: [`TransportHandle::stats`] returns
//! counters and a ring of the last [`MAX_EVENTS`] events, and
//! [`TransportStats::defense_metrics`] names the counters an operator should
//! be told about; the process decides how often to say so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, Instant};
/// The rustls crate the transport's TLS is built with (so callers name the
/// same types).
pub use tokio_rustls::rustls;

use crate::core::{checksum, Bytes, NodeId};
use crate::runtime::codec;
use crate::runtime::limits::{ByteBudget, HeldBytes, MAX_REFUSAL_SOURCES};
use crate::runtime::{Envelope, Outbox};

/// The frame layout and handshake version. A peer speaking another version
/// is refused with [`Refusal::Version`].
pub const PROTOCOL_VERSION: u8 = 1;

/// The transport's limits and the defaults of its config's limits, named
/// (and related to each other) in [`super::limits`].
pub use super::limits::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_INBOUND_BYTES, DEFAULT_INBOUND_LIMIT, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_INBOUND_CONNECTIONS, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_LIMIT,
    DEFAULT_STALL_TIMEOUT, MAX_EVENTS, MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, MAX_TOKEN_BYTES,
    READ_CHUNK_BYTES, RETAINED_READ_BUFFER_BYTES, WRITE_BATCH_BYTES,
};
/// An outbound link up at least this long counts as healthy: losing it
/// starts the reconnect backoff over.
const STABLE_LINK: Duration = Duration::from_secs(1);
/// How long [`TransportHandle::shutdown`] lets tasks finish before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// accept loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bytes of a frame before its body: `len` and `crc`.
const FRAME_HEADER_BYTES: usize = 8;

const KIND_HELLO: u8 = 1;
const KIND_HELLO_ACK: u8 = 2;
const KIND_ENVELOPE: u8 = 3;

/// How a transport is set up. Every queue it creates is bounded by a field
/// here.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id; envelopes addressed to another id are dropped.
    pub node_id: NodeId,
    /// Where to accept peers' connections (port 0: any free port, see
    /// [`TransportHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Peers with another cluster id are refused.
    pub cluster_id: u64,
    /// The shared secret every member of the cluster presents.
    pub token: String,
    /// Where each peer listens. More can be added later with
    /// [`TransportHandle::set_peer`].
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Envelopes waiting to be written to one peer; past it, sends drop.
    pub queue_limit: usize,
    /// Bytes of envelopes ([`codec::encoded_len`]) waiting to be written to
    /// one peer; past it, sends drop ([`TransportStats::dropped_queue_bytes`]).
    /// At least [`codec::MAX_ENVELOPE_BYTES`], so any valid envelope fits
    /// an empty queue.
    pub queue_bytes: usize,
    /// Received envelopes waiting for the receiver; past it, readers stop
    /// reading (TCP pushes back to the sender, whose queue then drops).
    pub inbound_limit: usize,
    /// Bytes of received envelopes waiting for the receiver, over all
    /// peers; past it, readers stop reading, as past `inbound_limit`. At
    /// least [`codec::MAX_ENVELOPE_BYTES`].
    pub inbound_bytes: usize,
    /// Accepted connections open at once; more are closed on accept.
    pub max_inbound_connections: usize,
    /// First reconnect delay after a failure.
    pub backoff_min: Duration,
    /// Reconnect delays double up to this cap (then jitter takes 0-50% off).
    pub backoff_max: Duration,
    /// Limit on a TCP connect.
    pub connect_timeout: Duration,
    /// Limit on a handshake, on either side.
    pub handshake_timeout: Duration,
    /// Limit on one write: a peer that stops reading is disconnected.
    pub write_timeout: Duration,
    /// After the handshake, an inbound connection on which no frame begins
    /// for this long is closed (an idle or abandoned connection holds a
    /// slot and a task; a live peer sends heartbeats far more often).
    pub idle_timeout: Duration,
    /// A frame that has begun must deliver more bytes at least this often,
    /// or its connection is closed (a peer that sends half a frame and
    /// stalls holds its buffer for no longer than this).
    pub stall_timeout: Duration,
    /// Bytes all inbound connections together may hold in frame buffers;
    /// a connection whose next piece would pass it is closed (counted in
    /// [`TransportStats::closed_over_budget`]). At least
    /// [`MAX_FRAME_BYTES`], so one frame of the largest size always fits.
    pub max_buffered_bytes: usize,
    /// Mutual TLS on every connection, both ways; `None`: plain TCP.
    pub tls: Option<TransportTls>,
}

/// The DNS name a node's certificate must carry: `node-ID.cds-raft`. A
/// connecting node checks it in the server's certificate, an accepting node
/// in the client's (against the id its hello claims).
pub fn node_cert_name(id: NodeId) -> String {
    format!("node-{id}.cds-raft")
}

/// TLS settings of a transport: mutual authentication against one CA.
#[derive(Debug, Clone)]
pub struct TransportTls {
    /// Accepting: presents this node's certificate and requires one from
    /// the client.
    pub server: Arc<rustls::ServerConfig>,
    /// Connecting: presents this node's certificate and verifies the
    /// server's against the CA and the peer's [`node_cert_name`].
    pub client: Arc<rustls::ClientConfig>,
}

impl TransportTls {
    /// TLS 1.3 (ring provider) with every certificate verified against
    /// `ca`, presenting `chain` (this node's certificate first, which must
    /// name [`node_cert_name`] of its id) with `key`.
    pub fn new(
        ca: &[CertificateDer<'static>],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TransportTls, TransportError> {
        let tls =
            |what: &str, e: &dyn std::fmt::Display| TransportError::Tls(format!("{what}: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots
                .add(c.clone())
                .map_err(|e| tls("CA certificate", &e))?;
        }
        if roots.is_empty() {
            return Err(TransportError::Tls("no CA certificate".to_owned()));
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls("client verifier", &e))?;
        let versions = [&rustls::version::TLS13];
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| tls("server protocol", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls("certificate and key", &e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| tls("client protocol", &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls("certificate and key", &e))?;
        Ok(TransportTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A connection, TLS or not.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
type BoxConn = Box<dyn Conn>;

impl TransportConfig {
    /// A configuration with no peers and default limits and timeouts.
    pub fn new(
        node_id: NodeId,
        listen: SocketAddr,
        cluster_id: u64,
        token: impl Into<String>,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            listen,
            cluster_id,
            token: token.into(),
            peers: BTreeMap::new(),
            queue_limit: DEFAULT_QUEUE_LIMIT,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            inbound_limit: DEFAULT_INBOUND_LIMIT,
            inbound_bytes: DEFAULT_INBOUND_BYTES,
            max_inbound_connections: DEFAULT_MAX_INBOUND_CONNECTIONS,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            tls: None,
        }
    }

    /// Checks the fields against each other; [`Transport::start`] calls it.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |s: &str| Err(TransportError::InvalidConfig(s.to_owned()));
        if self.node_id == 0 {
            return bad("node_id 0 is not a valid id");
        }
        if self.token.len() > MAX_TOKEN_BYTES {
            return bad("token is longer than MAX_TOKEN_BYTES");
        }
        if self.queue_limit == 0 || self.inbound_limit == 0 || self.max_inbound_connections == 0 {
            return bad("queue_limit, inbound_limit and max_inbound_connections must be > 0");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad("backoff_min must be > 0 and <= backoff_max");
        }
        if self.peers.contains_key(&0) || self.peers.contains_key(&self.node_id) {
            return bad("peers must not include id 0 or this node");
        }
        if self.idle_timeout.is_zero() || self.stall_timeout.is_zero() {
            return bad("idle_timeout and stall_timeout must be > 0");
        }
        if self.max_buffered_bytes < MAX_FRAME_BYTES {
            return bad("max_buffered_bytes must be at least MAX_FRAME_BYTES");
        }
        if self.queue_bytes < codec::MAX_ENVELOPE_BYTES
            || self.inbound_bytes < codec::MAX_ENVELOPE_BYTES
        {
            return bad("queue_bytes and inbound_bytes must be at least MAX_ENVELOPE_BYTES");
        }
        if self.inbound_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return bad("inbound_bytes is too large");
        }
        Ok(())
    }
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration contradicts itself.
    #[error("invalid transport config: {0}")]
    InvalidConfig(String),
    /// The TLS settings could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer speaks another [`PROTOCOL_VERSION`].
    Version,
    /// The peer belongs to another cluster.
    Cluster,
    /// The peer presented a wrong token.
    Token,
    /// The connection was meant for another node id (or came from id 0).
    WrongNode,
    /// The accepting node has too many connections open.
    Busy,
    /// The handshake was not a valid hello / hello-ack.
    Malformed,
    /// The hello came from a node id that is not one of this node's peers
    /// ([`TransportConfig::peers`] and [`TransportHandle::set_peer`]).
    UnknownPeer,
    /// The TLS handshake failed: no TLS, or a certificate the cluster's CA
    /// did not sign. Never sent (there is no channel to send it on).
    Tls,
    /// The client's TLS certificate does not name the node its hello
    /// claims.
    Certificate,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::Version => 1,
            Refusal::Cluster => 2,
            Refusal::Token => 3,
            Refusal::WrongNode => 4,
            Refusal::Busy => 5,
            Refusal::Malformed => 6,
            Refusal::UnknownPeer => 7,
            Refusal::Tls => 8,
            Refusal::Certificate => 9,
        }
    }

    fn from_code(code: u8) -> Refusal {
        match code {
            1 => Refusal::Version,
            2 => Refusal::Cluster,
            3 => Refusal::Token,
            4 => Refusal::WrongNode,
            5 => Refusal::Busy,
            7 => Refusal::UnknownPeer,
            8 => Refusal::Tls,
            9 => Refusal::Certificate,
            _ => Refusal::Malformed,
        }
    }
}

/// Messages to drop or delay, set by an admin request with
/// [`TransportHandle::set_filter`]. The default filter passes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultFilter {
    /// Envelopes to these nodes are dropped when sent.
    pub drop_to: BTreeSet<NodeId>,
    /// Envelopes from these nodes are dropped when received.
    pub drop_from: BTreeSet<NodeId>,
    /// Envelopes to these nodes are written this long after they are sent
    /// (the delay is fixed when the envelope is queued).
    pub delay_to: BTreeMap<NodeId, Duration>,
    /// Envelopes to these nodes are dropped when sent with this chance,
    /// in percent (100 drops them all); each envelope draws on its own.
    pub loss_to: BTreeMap<NodeId, u8>,
}

/// One thing worth telling an operator. A peer that keeps failing the same
/// way produces one event, not one per retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportEvent {
    /// Time since the transport started.
    pub at: Duration,
    /// What happened.
    pub kind: TransportEventKind,
}

/// What happened; see [`TransportEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEventKind {
    /// The outbound connection to `peer` completed its handshake.
    PeerConnected { peer: NodeId, addr: SocketAddr },
    /// The outbound connection to `peer` failed or was lost.
    PeerDown { peer: NodeId, reason: String },
    /// `peer` refused this node's handshake.
    PeerRefused { peer: NodeId, refusal: Refusal },
    /// A peer's connection to this node completed its handshake.
    InboundAccepted { peer: NodeId, addr: SocketAddr },
    /// This node refused a connection's handshake.
    InboundRefused { addr: SocketAddr, refusal: Refusal },
    /// An accepted connection closed; `peer` is `None` before a handshake.
    InboundClosed {
        peer: Option<NodeId>,
        addr: SocketAddr,
        reason: String,
    },
}

/// Counters since start, and the most recent events (at most
/// [`MAX_EVENTS`], oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Envelopes written to a peer's socket.
    pub sent: u64,
    /// Envelopes handed to the receiver.
    pub received: u64,
    /// Envelopes dropped because the peer's send queue held
    /// [`TransportConfig::queue_limit`] envelopes.
    pub dropped_queue_full: u64,
    /// Envelopes dropped because the peer's send queue held too many bytes
    /// to take them ([`TransportConfig::queue_bytes`]).
    pub dropped_queue_bytes: u64,
    /// Envelopes dropped by the fault filter (either direction).
    pub dropped_filter: u64,
    /// Envelopes sent to a node that is not a configured peer.
    pub dropped_unknown_peer: u64,
    /// Envelopes past the codec's limits (never sent).
    pub dropped_invalid: u64,
    /// Envelopes sent after shutdown.
    pub dropped_shutdown: u64,
    /// Received envelopes addressed to another node.
    pub dropped_misaddressed: u64,
    /// Outbound handshakes accepted by a peer.
    pub connects: u64,
    /// Outbound connects or handshakes that failed (not refusals).
    pub connect_failures: u64,
    /// Outbound handshakes a peer refused.
    pub refused_outbound: u64,
    /// Inbound connections this node refused (bad handshake or too many).
    pub refused_inbound: u64,
    /// Accepted connections closed because of a bad frame.
    pub bad_frames: u64,
    /// Inbound hellos refused because their node id is not a peer (also
    /// counted in `refused_inbound`).
    pub refused_unknown_peer: u64,
    /// Inbound connections refused in the TLS handshake (also counted in
    /// `refused_inbound`).
    pub refused_tls: u64,
    /// Inbound connections closed because a handshake, an idle wait or a
    /// started frame took too long.
    pub inbound_timeouts: u64,
    /// Inbound connections closed because their next frame piece would
    /// have passed [`TransportConfig::max_buffered_bytes`].
    pub closed_over_budget: u64,
    /// Bytes inbound connections hold in frame buffers now.
    pub buffered_bytes: u64,
    /// The most `buffered_bytes` has been since start.
    pub peak_buffered_bytes: u64,
    /// Bytes of envelopes waiting in the peers' send queues now (a payload
    /// queued for several peers counts in each).
    pub queued_bytes: u64,
    /// The most bytes one current peer's send queue has held at once.
    pub peak_queued_bytes: u64,
    /// Bytes of received envelopes waiting for the receiver now.
    pub inbound_bytes: u64,
    /// The most recent events, oldest first.
    pub events: Vec<TransportEvent>,
}

/// One figure of [`TransportStats::defense_metrics`], named for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportMetric {
    /// Metric name without the process's prefix, e.g.
    /// `transport_refused_inbound_total`.
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// True for a gauge (a level now), false for a counter since start.
    pub gauge: bool,
    /// True if a rise means a peer or a stranger misbehaved (or a peer is
    /// misconfigured): worth a line in the node's log.
    pub alarm: bool,
    /// The value.
    pub value: u64,
}

impl TransportStats {
    /// The figures that show attacks, misconfigured peers and the memory
    /// inbound connections hold: every refusal, bad frame, timeout and
    /// budget closure, and the buffered bytes. One list, so `/metrics` and
    /// the node's log name the same things.
    pub fn defense_metrics(&self) -> [TransportMetric; 10] {
        let counter = |name, help, alarm, value| TransportMetric {
            name,
            help,
            gauge: false,
            alarm,
            value,
        };
        let gauge = |name, help, value| TransportMetric {
            name,
            help,
            gauge: true,
            alarm: false,
            value,
        };
        [
            counter(
                "transport_refused_inbound_total",
                "Inbound connections refused (bad handshake, unknown peer, too many).",
                true,
                self.refused_inbound,
            ),
            counter(
                "transport_refused_unknown_peer_total",
                "Inbound hellos refused: the node id is not a peer.",
                true,
                self.refused_unknown_peer,
            ),
            counter(
                "transport_refused_tls_total",
                "Inbound connections refused in the TLS handshake.",
                true,
                self.refused_tls,
            ),
            counter(
                "transport_bad_frames_total",
                "Inbound connections closed for a bad frame.",
                true,
                self.bad_frames,
            ),
            counter(
                "transport_inbound_timeouts_total",
                "Inbound connections closed: handshake, idle or stalled frame timed out.",
                true,
                self.inbound_timeouts,
            ),
            counter(
                "transport_closed_over_budget_total",
                "Inbound connections closed: frame buffers at their byte budget.",
                true,
                self.closed_over_budget,
            ),
            counter(
                "transport_refused_outbound_total",
                "Handshakes to peers that the peer refused.",
                true,
                self.refused_outbound,
            ),
            counter(
                "transport_connect_failures_total",
                "Connects or handshakes to peers that failed (not refusals).",
                false,
                self.connect_failures,
            ),
            gauge(
                "transport_buffered_bytes",
                "Bytes inbound connections hold in frame buffers.",
                self.buffered_bytes,
            ),
            gauge(
                "transport_peak_buffered_bytes",
                "The most bytes inbound frame buffers have held since start.",
                self.peak_buffered_bytes,
            ),
        ]
    }
}

/// A received envelope on its way to the receiver, with the bytes of
/// [`TransportConfig::inbound_bytes`] it holds until taken.
type InboundItem = (Envelope, OwnedSemaphorePermit);

/// The receiver of the envelopes addressed to this node (from
/// [`Transport::start`]). An envelope holds its bytes of
/// [`TransportConfig::inbound_bytes`] until it is taken here.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<InboundItem>,
}

impl Inbound {
    /// The next envelope; `None` once the transport shut down (or every
    /// handle was dropped) and everything queued was taken.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await.map(|(env, _bytes)| env)
    }

    /// The next envelope if one is queued now.
    pub fn try_recv(&mut self) -> Result<Envelope, mpsc::error::TryRecvError> {
        self.rx.try_recv().map(|(env, _bytes)| env)
    }
}

/// Starts transports; see [`Transport::start`].
pub struct Transport;

impl Transport {
    /// Binds `cfg.listen`, starts a connection task per peer and the accept
    /// loop, and returns the handle plus the receiver of envelopes addressed
    /// to this node. The receiver ends after [`TransportHandle::shutdown`]
    /// (or when the last handle is dropped). Must be called within a tokio
    /// runtime.
    pub async fn start(cfg: TransportConfig) -> Result<(TransportHandle, Inbound), TransportError> {
        cfg.validate()?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(cfg.inbound_limit);
        let inbound_budget = Arc::new(Semaphore::new(cfg.inbound_bytes));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            started: Instant::now(),
            local_addr,
            counters: Counters::default(),
            events: Mutex::new(VecDeque::new()),
            filter: Mutex::new(FaultFilter::default()),
            loss_draw: AtomicU64::new(cfg.node_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            peers: Mutex::new(BTreeMap::new()),
            inbound_tx: Mutex::new(Some(inbound_tx)),
            inbound_budget,
            inbound_conns: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            shutdown_tx,
            shutdown_rx,
            cfg,
        });
        let handle = TransportHandle {
            inner: inner.clone(),
            tasks: Arc::new(Tasks {
                set: Mutex::new(JoinSet::new()),
            }),
        };
        lock(&handle.tasks.set).spawn(accept_loop(inner.clone(), listener));
        for (&id, &addr) in &inner.cfg.peers {
            handle.set_peer(id, addr);
        }
        Ok((handle, Inbound { rx: inbound_rx }))
    }
}

/// Sends envelopes, changes peers and the fault filter, reads stats, shuts
/// the transport down. Cheap to clone; dropping the last clone stops every
/// task, like [`shutdown`](TransportHandle::shutdown) without waiting.
#[derive(Clone)]
pub struct TransportHandle {
    inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportHandle")
            .field("node_id", &self.inner.cfg.node_id)
            .field("local_addr", &self.inner.local_addr)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The tasks of one transport. Only handles own it, so dropping the last
/// handle drops the set, which aborts every task (tasks hold `Inner`, never
/// this).
struct Tasks {
    set: Mutex<JoinSet<()>>,
}

impl TransportHandle {
    /// The address the transport listens on (the real port when configured
    /// with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// Adds peer `id` at `addr`, or moves it there (the current connection is
    /// closed and a new one opened). Ignored after shutdown, and for id 0 or
    /// this node's id.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        let inner = &self.inner;
        if id == 0 || id == inner.cfg.node_id || inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut peers = lock(&inner.peers);
        if let Some(p) = peers.get(&id) {
            if *p.addr.borrow() != addr {
                p.addr.send_replace(addr);
            }
            return;
        }
        let (addr_tx, addr_rx) = watch::channel(addr);
        let (queue_tx, queue_rx) = mpsc::channel(inner.cfg.queue_limit);
        let budget = ByteBudget::new(inner.cfg.queue_bytes);
        let back = Arc::new(Notify::new());
        let task = {
            let mut set = lock(&self.tasks.set);
            // Reap tasks of removed peers so the set does not grow.
            while set.try_join_next().is_some() {}
            set.spawn(run_peer(inner.clone(), id, addr_rx, queue_rx, back.clone()))
        };
        peers.insert(
            id,
            Peer {
                addr: addr_tx,
                queue: queue_tx,
                budget,
                task,
                back,
            },
        );
    }

    /// Forgets peer `id`: its connection closes and its queued envelopes are
    /// dropped; later sends to it count as `dropped_unknown_peer`, and its
    /// new connections are refused ([`Refusal::UnknownPeer`]; one it already
    /// has stays open until it closes or idles out).
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(p) = lock(&self.inner.peers).remove(&id) {
            p.task.abort();
        }
    }

    /// Replaces the fault filter; takes effect for every envelope sent or
    /// received from now on.
    pub fn set_filter(&self, filter: FaultFilter) {
        *lock(&self.inner.filter) = filter;
    }

    /// The fault filter in effect.
    pub fn filter(&self) -> FaultFilter {
        lock(&self.inner.filter).clone()
    }

    /// Counters since start and the recent events.
    pub fn stats(&self) -> TransportStats {
        let c = &self.inner.counters;
        let (queued_bytes, peak_queued_bytes) = lock(&self.inner.peers)
            .values()
            .fold((0, 0), |(sum, peak), p| {
                (sum + p.budget.held(), peak.max(p.budget.peak()))
            });
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            sent: get(&c.sent),
            received: get(&c.received),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_queue_bytes: get(&c.dropped_queue_bytes),
            dropped_filter: get(&c.dropped_filter),
            dropped_unknown_peer: get(&c.dropped_unknown_peer),
            dropped_invalid: get(&c.dropped_invalid),
            dropped_shutdown: get(&c.dropped_shutdown),
            dropped_misaddressed: get(&c.dropped_misaddressed),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            refused_outbound: get(&c.refused_outbound),
            refused_inbound: get(&c.refused_inbound),
            bad_frames: get(&c.bad_frames),
            refused_unknown_peer: get(&c.refused_unknown_peer),
            refused_tls: get(&c.refused_tls),
            inbound_timeouts: get(&c.inbound_timeouts),
            closed_over_budget: get(&c.closed_over_budget),
            buffered_bytes: get(&c.buffered_bytes),
            peak_buffered_bytes: get(&c.peak_buffered_bytes),
            queued_bytes,
            peak_queued_bytes,
            inbound_bytes: (self.inner.cfg.inbound_bytes)
                .saturating_sub(self.inner.inbound_budget.available_permits())
                as u64,
            events: lock(&self.inner.events).iter().cloned().collect(),
        }
    }

    /// Closes the listener and every connection, drops queued envelopes, and
    /// ends the receiver. Waits at most about a second for tasks to finish,
    /// then aborts the rest. Later sends are dropped and counted.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        inner.shutdown_tx.send_replace(true);
        lock(&inner.inbound_tx).take();
        lock(&inner.peers).clear();
        let mut set = std::mem::take(&mut *lock(&self.tasks.set));
        let _ = timeout(SHUTDOWN_GRACE, async {
            while set.join_next().await.is_some() {}
        })
        .await;
        set.shutdown().await;
    }
}

/// A number below 100 from the loss filter's generator (a splitmix64 step:
/// the filter is a fault injected on purpose, so it needs spread, not
/// secrecy).
fn draw_percent(state: &AtomicU64) -> u64 {
    let mut z = state
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 100
}

impl Outbox for TransportHandle {
    /// Queues `env` for its peer without blocking. Drops it (and counts why)
    /// when the filter says so, the peer is unknown, the envelope is past
    /// the codec's limits, or the peer's queue is full.
    fn send(&self, env: Envelope) {
        let inner = &self.inner;
        let c = &inner.counters;
        if inner.closed.load(Ordering::SeqCst) {
            bump(&c.dropped_shutdown);
            return;
        }
        let to = env.to();
        let delay = {
            let f = lock(&inner.filter);
            if f.drop_to.contains(&to) {
                bump(&c.dropped_filter);
                return;
            }
            if let Some(&pct) = f.loss_to.get(&to) {
                if draw_percent(&inner.loss_draw) < u64::from(pct) {
                    bump(&c.dropped_filter);
                    return;
                }
            }
            f.delay_to.get(&to).copied()
        };
        if codec::validate(&env).is_err() {
            bump(&c.dropped_invalid);
            return;
        }
        let due = match delay {
            None => None,
            Some(d) => match Instant::now().checked_add(d) {
                Some(due) => Some(due),
                // A delay past the end of time is a drop.
                None => {
                    bump(&c.dropped_filter);
                    return;
                }
            },
        };
        let peers = lock(&inner.peers);
        let Some(peer) = peers.get(&to) else {
            bump(&c.dropped_unknown_peer);
            return;
        };
        // Counted now, given back once written (or dropped with the queue).
        let Some(held) = peer.budget.try_take(codec::encoded_len(&env)) else {
            bump(&c.dropped_queue_bytes);
            return;
        };
        match peer.queue.try_send(Queued { due, env, held }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&c.dropped_queue_full),
            Err(mpsc::error::TrySendError::Closed(_)) => bump(&c.dropped_shutdown),
        }
    }
}

/// State shared by the handle and the tasks.
struct Inner {
    cfg: TransportConfig,
    started: Instant,
    local_addr: SocketAddr,
    counters: Counters,
    /// The recent events, at most MAX_EVENTS.
    events: Mutex<VecDeque<TransportEvent>>,
    filter: Mutex<FaultFilter>,
    /// The state of the loss filter's draws (see [`draw_percent`]).
    loss_draw: AtomicU64,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    /// Taken at shutdown, so the receiver ends once readers are gone.
    inbound_tx: Mutex<Option<mpsc::Sender<InboundItem>>>,
    /// Bytes of received envelopes the receiver has not taken yet
    /// ([`TransportConfig::inbound_bytes`] permits).
    inbound_budget: Arc<Semaphore>,
    /// The accepted connection of each peer, so a newer one replaces it (a
    /// peer that reconnects after a half-open failure does not leave the
    /// old connection holding a slot).
    inbound_conns: Mutex<BTreeMap<NodeId, (u64, Arc<Notify>)>>,
    /// The last refusal per source (address, claimed id), so a source that
    /// keeps being refused for the same reason logs one event. At most
    /// MAX_REFUSAL_SOURCES entries.
    refusals: Mutex<BTreeMap<(IpAddr, Option<NodeId>), Refusal>>,
    next_conn: AtomicU64,
    closed: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

impl Inner {
    /// Counts an inbound refusal and names it in the events, once per
    /// source and reason: a misconfigured peer retries forever and must not
    /// push every other event out of the ring.
    /// An inbound connection that did not finish its handshake in time:
    /// counted and reported (the caller drops it).
    fn handshake_timed_out(&self, addr: SocketAddr, reason: &str) {
        bump(&self.counters.inbound_timeouts);
        self.event(TransportEventKind::InboundClosed {
            peer: None,
            addr,
            reason: reason.to_owned(),
        });
    }

    fn refused_inbound(&self, addr: SocketAddr, refusal: Refusal, claimed: Option<NodeId>) {
        bump(&self.counters.refused_inbound);
        match refusal {
            Refusal::UnknownPeer => bump(&self.counters.refused_unknown_peer),
            Refusal::Tls => bump(&self.counters.refused_tls),
            _ => {}
        }
        let fresh = {
            let mut seen = lock(&self.refusals);
            if seen.len() >= MAX_REFUSAL_SOURCES {
                seen.clear();
            }
            seen.insert((addr.ip(), claimed), refusal) != Some(refusal)
        };
        if fresh {
            self.event(TransportEventKind::InboundRefused { addr, refusal });
        }
    }

    fn event(&self, kind: TransportEventKind) {
        let mut events = lock(&self.events);
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(TransportEvent {
            at: self.started.elapsed(),
            kind,
        });
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_queue_bytes: AtomicU64,
    dropped_filter: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_shutdown: AtomicU64,
    dropped_misaddressed: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    refused_outbound: AtomicU64,
    refused_inbound: AtomicU64,
    bad_frames: AtomicU64,
    refused_unknown_peer: AtomicU64,
    refused_tls: AtomicU64,
    inbound_timeouts: AtomicU64,
    closed_over_budget: AtomicU64,
    buffered_bytes: AtomicU64,
    peak_buffered_bytes: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A lock that survives a panic elsewhere: every value guarded here stays
/// consistent between statements, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One peer's outbound side: its address, its bounded queue, its task.
struct Peer {
    addr: watch::Sender<SocketAddr>,
    queue: mpsc::Sender<Queued>,
    /// The bytes its queue holds ([`TransportConfig::queue_bytes`]).
    budget: Arc<ByteBudget>,
    task: AbortHandle,
    /// Woken when the peer connects to this node: cuts a backoff short.
    back: Arc<Notify>,
}

/// An envelope waiting to be written, not before `due` (the filter's delay),
/// holding its bytes of the peer's queue budget until written or dropped.
struct Queued {
    due: Option<Instant>,
    env: Envelope,
    held: HeldBytes,
}

/// The state of an outbound link, for "one event per change of state".
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Up,
    /// Not connected, whatever the reason: failures that alternate between
    /// reasons (reset, closed, timed out) are still one state.
    Down,
    Refused(Refusal),
}

/// Exponential reconnect delays with jitter, so peers that lost a node at
/// the same moment do not reconnect in lockstep.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay: the current step minus a random 0-50%.
    fn delay(&mut self) -> Duration {
        // xorshift64: jitter needs no quality, only variety between nodes.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let step = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let frac = (self.rng % 1000) as u32;
        step.saturating_sub((step / 2).saturating_mul(frac) / 1000)
    }
}

fn jitter_seed(node: NodeId, peer: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ node.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ peer.rotate_left(32)
}

/// The outbound side of one peer: connect, handshake, write queued
/// envelopes; on any failure, back off and start over.
async fn run_peer(
    inner: Arc<Inner>,
    peer: NodeId,
    mut addr_rx: watch::Receiver<SocketAddr>,
    mut queue: mpsc::Receiver<Queued>,
    back: Arc<Notify>,
) {
    let cfg = &inner.cfg;
    let mut shutdown = inner.shutdown_rx.clone();
    let mut backoff = Backoff::new(
        cfg.backoff_min,
        cfg.backoff_max,
        jitter_seed(cfg.node_id, peer),
    );
    let mut state: Option<LinkState> = None;
    let mut change = |inner: &Inner, new: LinkState, kind: TransportEventKind| {
        if state.as_ref() != Some(&new) {
            inner.event(kind);
            state = Some(new);
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let addr = *addr_rx.borrow_and_update();
        let connected = tokio::select! {
            r = connect(&inner, peer, addr) => r,
            _ = shutdown.changed() => return,
        };
        match connected {
            Ok(stream) => {
                let up_since = Instant::now();
                bump(&inner.counters.connects);
                change(
                    &inner,
                    LinkState::Up,
                    TransportEventKind::PeerConnected { peer, addr },
                );
                let reason = tokio::select! {
                    r = pump(&inner, stream, &mut queue) => match r {
                        Some(reason) => reason,
                        // The queue closed: the peer was removed.
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                    r = addr_rx.changed() => match r {
                        Ok(()) => "peer address changed".to_owned(),
                        // The peer was removed.
                        Err(_) => return,
                    },
                };
                change(
                    &inner,
                    LinkState::Down,
                    TransportEventKind::PeerDown { peer, reason },
                );
                // Only a link that stayed up resets the backoff: a peer that
                // accepts and at once closes keeps backing off, so it costs
                // ever fewer reconnects and events.
                if up_since.elapsed() >= STABLE_LINK {
                    backoff.reset();
                }
            }
            Err(ConnectError::Refused(refusal)) => {
                bump(&inner.counters.refused_outbound);
                change(
                    &inner,
                    LinkState::Refused(refusal),
                    TransportEventKind::PeerRefused { peer, refusal },
                );
            }
            Err(ConnectError::Failed(reason)) => {
                bump(&inner.counters.connect_failures);
                change(
                    &inner,
                    LinkState::Down,
                    TransportEventKind::PeerDown { peer, reason },
                );
            }
        }
        let pause = backoff.delay();
        tokio::select! {
            _ = sleep(pause) => {}
            _ = shutdown.changed() => return,
            // A new address is worth trying at once.
            r = addr_rx.changed() => match r {
                Ok(()) => backoff.reset(),
                Err(_) => return,
            },
            // The peer just connected to us: it is back (a restart), so
            // waiting out a long backoff would only delay its catching up.
            _ = back.notified() => backoff.reset(),
        }
    }
}

enum ConnectError {
    Refused(Refusal),
    Failed(String),
}

/// Connects to `addr` and performs the handshake as the connecting side.
async fn connect(inner: &Inner, peer: NodeId, addr: SocketAddr) -> Result<BoxConn, ConnectError> {
    let cfg = &inner.cfg;
    let tcp = match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Failed("connect timed out".to_owned())),
        Ok(Err(e)) => return Err(ConnectError::Failed(io_reason(&e))),
        Ok(Ok(s)) => s,
    };
    // Raft messages are small and latency-sensitive; batching is done here.
    let _ = tcp.set_nodelay(true);
    let hs = async {
        let mut stream: BoxConn = match &cfg.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = ServerName::try_from(node_cert_name(peer))
                    .map_err(|e| ConnectError::Failed(format!("tls: {e}")))?;
                let s = TlsConnector::from(tls.client.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Failed(format!("tls: {e}")))?;
                Box::new(s)
            }
        };
        let mut hello = Vec::with_capacity(64);
        hello.extend_from_slice(&cfg.cluster_id.to_le_bytes());
        hello.extend_from_slice(&cfg.node_id.to_le_bytes());
        hello.extend_from_slice(&peer.to_le_bytes());
        let token = cfg.token.as_bytes();
        hello.extend_from_slice(&(token.len() as u16).to_le_bytes());
        hello.extend_from_slice(token);
        let mut frame = Vec::with_capacity(hello.len() + 16);
        put_frame(&mut frame, KIND_HELLO, |b| b.extend_from_slice(&hello));
        stream
            .write_all(&frame)
            .await
            .map_err(|e| ConnectError::Failed(io_reason(&e)))?;
        stream
            .flush()
            .await
            .map_err(|e| ConnectError::Failed(io_reason(&e)))?;
        let mut fb = FrameBuffer::handshake();
        let (version, kind) = read_frame(
            &mut stream,
            MAX_HANDSHAKE_FRAME_BYTES,
            &mut fb,
            ReadLimits::of(cfg),
        )
        .await
        .map_err(|e| ConnectError::Failed(format!("handshake: {e}")))?;
        let buf = &fb.buf;
        if version != PROTOCOL_VERSION {
            return Err(ConnectError::Refused(Refusal::Version));
        }
        if kind != KIND_HELLO_ACK || buf.len() != 2 + 9 {
            return Err(ConnectError::Refused(Refusal::Malformed));
        }
        match buf[2] {
            0 => {}
            code => return Err(ConnectError::Refused(Refusal::from_code(code))),
        }
        // The address may now belong to another node of the cluster.
        let mut id = [0u8; 8];
        id.copy_from_slice(&buf[3..11]);
        if u64::from_le_bytes(id) != peer {
            return Err(ConnectError::Refused(Refusal::WrongNode));
        }
        Ok(stream)
    };
    match timeout(cfg.handshake_timeout, hs).await {
        Err(_) => Err(ConnectError::Failed("handshake timed out".to_owned())),
        Ok(r) => r,
    }
}

/// Writes queued envelopes to an established connection until it fails
/// (`Some(reason)`) or the queue closes (`None`).
async fn pump(
    inner: &Inner,
    stream: BoxConn,
    queue: &mut mpsc::Receiver<Queued>,
) -> Option<String> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut probe = [0u8; 1];
    let write_timeout = inner.cfg.write_timeout;
    loop {
        let first = tokio::select! {
            q = queue.recv() => q?,
            // The accepting side never writes after the handshake: any
            // read result means the connection is closed or broken.
            r = rd.read(&mut probe) => return Some(match r {
                Ok(0) => "peer closed the connection".to_owned(),
                Ok(_) => "peer sent data on a write-only connection".to_owned(),
                Err(e) => io_reason(&e),
            }),
        };
        buf.clear();
        // The queue bytes of the envelopes encoded into `buf`: given back
        // once written (or dropped with this future if the link goes).
        let mut batch: Vec<HeldBytes> = Vec::new();
        let mut next = Some(first);
        while let Some(q) = next.take() {
            if let Some(due) = q.due {
                if due > Instant::now() {
                    // Write what is ready before waiting for a delayed one.
                    if let Err(reason) = flush(&mut wr, &mut buf, write_timeout).await {
                        return Some(reason);
                    }
                    bump_by(&inner.counters.sent, batch.len() as u64);
                    batch.clear();
                    sleep_until(due).await;
                }
            }
            put_frame(&mut buf, KIND_ENVELOPE, |b| codec::encode(&q.env, b));
            batch.push(q.held);
            if buf.len() < WRITE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if let Err(reason) = flush(&mut wr, &mut buf, write_timeout).await {
            return Some(reason);
        }
        bump_by(&inner.counters.sent, batch.len() as u64);
    }
}

fn bump_by(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Writes `buf` and flushes it (TLS holds written bytes until a flush).
async fn flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    let r = timeout(limit, async {
        wr.write_all(buf).await?;
        wr.flush().await
    })
    .await;
    buf.clear();
    match r {
        Err(_) => Err("write timed out".to_owned()),
        Ok(Err(e)) => Err(io_reason(&e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Accepts connections until shutdown; each is served on its own task,
/// at most `max_inbound_connections` at once.
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown_rx.clone();
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                while conns.try_join_next().is_some() {}
                if conns.len() >= inner.cfg.max_inbound_connections {
                    bump(&inner.counters.refused_inbound);
                    inner.event(TransportEventKind::InboundRefused {
                        addr,
                        refusal: Refusal::Busy,
                    });
                    drop(stream);
                    continue;
                }
                conns.spawn(serve_inbound(inner.clone(), stream, addr));
            }
            Err(_) => {
                tokio::select! {
                    _ = sleep(ACCEPT_ERROR_PAUSE) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    drop(listener);
    let _ = timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

/// Serves one accepted connection: handshake, then read envelopes and hand
/// them to the receiver until the connection ends or misbehaves.
async fn serve_inbound(inner: Arc<Inner>, tcp: TcpStream, addr: SocketAddr) {
    let mut shutdown = inner.shutdown_rx.clone();
    let _ = tcp.set_nodelay(true);
    // One limit for the TLS handshake and the hello together.
    let deadline = Instant::now() + inner.cfg.handshake_timeout;
    let (stream, cert): (BoxConn, _) = match &inner.cfg.tls {
        None => (Box::new(tcp), None),
        Some(tls) => {
            match tokio::time::timeout_at(
                deadline,
                TlsAcceptor::from(tls.server.clone()).accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => {
                    let cert = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    (Box::new(s), Some(cert))
                }
                Ok(Err(_)) => {
                    inner.refused_inbound(addr, Refusal::Tls, None);
                    return;
                }
                Err(_) => {
                    inner.handshake_timed_out(addr, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut stream = BufReader::new(stream);
    let peer = match tokio::time::timeout_at(
        deadline,
        accept_handshake(&inner, &mut stream, cert.as_ref()),
    )
    .await
    {
        Ok(Ok(peer)) => peer,
        Ok(Err(HandshakeEnd::Refused(refusal, claimed))) => {
            inner.refused_inbound(addr, refusal, claimed);
            return;
        }
        Ok(Err(HandshakeEnd::Failed(reason))) => {
            bump(&inner.counters.bad_frames);
            inner.event(TransportEventKind::InboundClosed {
                peer: None,
                addr,
                reason,
            });
            return;
        }
        Err(_) => {
            inner.handshake_timed_out(addr, "handshake timed out");
            return;
        }
    };
    let Some(tx) = lock(&inner.inbound_tx).clone() else {
        return;
    };
    lock(&inner.refusals).remove(&(addr.ip(), Some(peer)));
    inner.event(TransportEventKind::InboundAccepted { peer, addr });
    if let Some(p) = lock(&inner.peers).get(&peer) {
        p.back.notify_one();
    }
    let conn_id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let kick = Arc::new(Notify::new());
    if let Some((_, old)) = lock(&inner.inbound_conns).insert(peer, (conn_id, kick.clone())) {
        // notify_one keeps a permit, so the old connection sees it even if
        // it is not waiting right now.
        old.notify_one();
    }
    let reason = tokio::select! {
        r = read_envelopes(&inner, &mut stream, peer, &tx) => r,
        _ = kick.notified() => Some("replaced by a newer connection from the same peer".to_owned()),
        _ = shutdown.changed() => None,
    };
    {
        let mut conns = lock(&inner.inbound_conns);
        if conns.get(&peer).map(|(id, _)| *id) == Some(conn_id) {
            conns.remove(&peer);
        }
    }
    if let Some(reason) = reason {
        inner.event(TransportEventKind::InboundClosed {
            peer: Some(peer),
            addr,
            reason,
        });
    }
}

enum HandshakeEnd {
    /// Refused, with the node id the hello claimed if it had one.
    Refused(Refusal, Option<NodeId>),
    Failed(String),
}

/// The accepting side of the handshake: reads the hello, answers, and
/// returns the peer's id if accepted. With TLS, `cert` is what the client
/// presented (`Some(None)`: nothing), and must name the hello's node.
async fn accept_handshake(
    inner: &Inner,
    stream: &mut BufReader<BoxConn>,
    cert: Option<&Option<CertificateDer<'static>>>,
) -> Result<NodeId, HandshakeEnd> {
    let cfg = &inner.cfg;
    let mut fb = FrameBuffer::handshake();
    let (version, kind) = read_frame(
        stream,
        MAX_HANDSHAKE_FRAME_BYTES,
        &mut fb,
        ReadLimits::of(cfg),
    )
    .await
    .map_err(|e| HandshakeEnd::Failed(format!("handshake: {e}")))?;
    let buf = &fb.buf;
    let verdict = if version != PROTOCOL_VERSION {
        Err(Refusal::Version)
    } else if kind != KIND_HELLO {
        Err(Refusal::Malformed)
    } else {
        check_hello(cfg, &buf[2..], |id| lock(&inner.peers).contains_key(&id))
    };
    let verdict = match (verdict, cert) {
        (Ok(from), Some(cert)) if !cert_names(cert.as_ref(), from) => Err(Refusal::Certificate),
        (v, _) => v,
    };
    let mut ack = Vec::with_capacity(32);
    put_frame(&mut ack, KIND_HELLO_ACK, |b| {
        b.push(match verdict {
            Ok(_) => 0,
            Err(r) => r.code(),
        });
        b.extend_from_slice(&cfg.node_id.to_le_bytes());
    });
    // On refusal the ack is a courtesy: a failure to deliver it changes
    // nothing.
    let written = async {
        stream.get_mut().write_all(&ack).await?;
        stream.get_mut().flush().await
    }
    .await;
    let claimed = buf.get(2 + 8..2 + 16).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    });
    let peer = verdict.map_err(|r| HandshakeEnd::Refused(r, claimed))?;
    written.map_err(|e| HandshakeEnd::Failed(io_reason(&e)))?;
    Ok(peer)
}

/// Checks a hello's body: its cluster, its token, that it is meant for this
/// node, and that it comes from a node `is_peer` knows. The checks that need
/// the token come first, so a client without it learns nothing about which
/// ids are peers.
fn check_hello(
    cfg: &TransportConfig,
    b: &[u8],
    is_peer: impl Fn(NodeId) -> bool,
) -> Result<NodeId, Refusal> {
    let u64_at = |at: usize| -> Result<u64, Refusal> {
        let s = b.get(at..at + 8).ok_or(Refusal::Malformed)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    };
    let cluster = u64_at(0)?;
    let from = u64_at(8)?;
    let to = u64_at(16)?;
    let len = b.get(24..26).ok_or(Refusal::Malformed)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let token = b.get(26..).ok_or(Refusal::Malformed)?;
    if token.len() != len {
        return Err(Refusal::Malformed);
    }
    if cluster != cfg.cluster_id {
        return Err(Refusal::Cluster);
    }
    if !constant_time_eq(token, cfg.token.as_bytes()) {
        return Err(Refusal::Token);
    }
    if to != cfg.node_id || from == 0 || from == cfg.node_id {
        return Err(Refusal::WrongNode);
    }
    if !is_peer(from) {
        return Err(Refusal::UnknownPeer);
    }
    Ok(from)
}

/// True if `cert` (a client's TLS certificate, already verified against the
/// CA) names node `id`.
fn cert_names(cert: Option<&CertificateDer<'static>>, id: NodeId) -> bool {
    let Some(cert) = cert else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_cert_name(id)) else {
        return false;
    };
    rustls::server::ParsedCertificate::try_from(cert)
        .and_then(|c| rustls::client::verify_server_name(&c, &name))
        .is_ok()
}

/// Whether `given` equals `secret`, in a time that depends on the secret's
/// length only, not on where they first differ: an attacker timing the
/// answers learns nothing about the secret's bytes. Every secret check
/// (the transport's token, the HTTP API's admin token) uses this one.
pub fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, &s) in secret.iter().enumerate() {
        diff |= s ^ given.get(i).copied().unwrap_or(!s);
    }
    std::hint::black_box(diff) == 0
}

/// Reads envelope frames until the connection ends (`Some(reason)`) or the
/// receiver is gone (`None`).
async fn read_envelopes(
    inner: &Inner,
    stream: &mut BufReader<BoxConn>,
    peer: NodeId,
    tx: &mpsc::Sender<InboundItem>,
) -> Option<String> {
    let c = &inner.counters;
    let limits = ReadLimits::of(&inner.cfg);
    let mut fb = FrameBuffer::envelopes(inner);
    loop {
        let bad = |reason: String| {
            bump(&c.bad_frames);
            Some(reason)
        };
        fb.trim();
        let (version, kind) = match read_frame(stream, MAX_FRAME_BYTES, &mut fb, limits).await {
            Ok(vk) => vk,
            Err(FrameError::Eof) => return Some("peer closed the connection".to_owned()),
            Err(FrameError::Io(e)) => return Some(io_reason(&e)),
            Err(e @ FrameError::Timeout(_)) => {
                bump(&c.inbound_timeouts);
                return Some(e.to_string());
            }
            Err(e @ FrameError::OverBudget { .. }) => {
                bump(&c.closed_over_budget);
                return Some(e.to_string());
            }
            Err(e) => return bad(e.to_string()),
        };
        if version != PROTOCOL_VERSION || kind != KIND_ENVELOPE {
            return bad(format!("unexpected frame version {version} kind {kind}"));
        }
        // The frame's buffer becomes the envelope's: its payloads are
        // slices of it, not copies.
        let frame = fb.take_frame().slice(2..);
        let env = match codec::decode_shared(&frame) {
            Ok(env) => env,
            Err(e) => return bad(format!("undecodable envelope: {e}")),
        };
        if env.msg.from != peer {
            return bad(format!(
                "envelope from node {} on node {peer}'s connection",
                env.msg.from
            ));
        }
        if env.msg.to != inner.cfg.node_id {
            bump(&c.dropped_misaddressed);
            continue;
        }
        if lock(&inner.filter).drop_from.contains(&peer) {
            bump(&c.dropped_filter);
            continue;
        }
        // Waiting here (instead of dropping) lets TCP push back on the
        // sender, whose bounded queue then drops. The frame stays counted
        // in the frame budget until handed over (the next `trim`).
        let n = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        drop(frame);
        let Ok(bytes) = inner.inbound_budget.clone().acquire_many_owned(n).await else {
            return None;
        };
        let Ok(permit) = tx.reserve().await else {
            return None;
        };
        // Counted before the hand-over, so whoever sees the envelope sees
        // it counted.
        bump(&c.received);
        permit.send((env, bytes));
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("connection closed")]
    Eof,
    #[error("{}", io_reason(.0))]
    Io(io::Error),
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("{0} within the time limit")]
    Timeout(&'static str),
    #[error("frame buffers would pass the budget of {limit} bytes")]
    OverBudget { limit: usize },
}

/// Appends one frame whose payload `payload` writes.
fn put_frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.push(PROTOCOL_VERSION);
    out.push(kind);
    payload(out);
    let body = &out[start + FRAME_HEADER_BYTES..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = checksum(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One connection's frame buffer. An envelope connection's capacity is
/// counted in the transport's [`Counters::buffered_bytes`] and held within
/// [`TransportConfig::max_buffered_bytes`]; dropping it gives its bytes
/// back. A handshake's is not counted: it holds at most
/// [`MAX_HANDSHAKE_FRAME_BYTES`] per connection (so at most that times
/// [`TransportConfig::max_inbound_connections`]), and peers that fill the
/// budget must not keep others from connecting.
struct FrameBuffer<'a> {
    buf: Vec<u8>,
    /// The transport's counters and budget; `None` for a handshake.
    budget: Option<(&'a Counters, usize)>,
    /// Bytes this buffer has counted in `buffered_bytes`.
    held: usize,
}

impl<'a> FrameBuffer<'a> {
    /// A buffer for envelope frames, within the transport's budget.
    fn envelopes(inner: &'a Inner) -> FrameBuffer<'a> {
        FrameBuffer {
            buf: Vec::new(),
            budget: Some((&inner.counters, inner.cfg.max_buffered_bytes)),
            held: 0,
        }
    }

    /// A buffer for one handshake frame (at most MAX_HANDSHAKE_FRAME_BYTES).
    fn handshake() -> FrameBuffer<'static> {
        FrameBuffer {
            buf: Vec::new(),
            budget: None,
            held: 0,
        }
    }

    /// Makes room for `more` bytes past the buffer's length, growing its
    /// capacity at most to `cap` (the frame's length) and at least
    /// geometrically, so a large frame costs few copies. Refuses growth that
    /// would take the transport past its budget.
    fn reserve(&mut self, more: usize, cap: usize) -> Result<(), FrameError> {
        let need = self.buf.len() + more;
        let old = self.buf.capacity();
        if need <= old {
            return Ok(());
        }
        let target = need.max(old.saturating_mul(2)).min(cap.max(need));
        let Some((counters, budget)) = self.budget else {
            self.buf.reserve_exact(target - self.buf.len());
            return Ok(());
        };
        let claim = (target - old) as u64;
        let total = &counters.buffered_bytes;
        let now = total.fetch_add(claim, Ordering::Relaxed) + claim;
        if now > budget as u64 {
            total.fetch_sub(claim, Ordering::Relaxed);
            return Err(FrameError::OverBudget { limit: budget });
        }
        self.buf.reserve_exact(target - self.buf.len());
        // The allocator may round up: count what was really taken.
        let got = self.buf.capacity() - old;
        if got as u64 > claim {
            total.fetch_add(got as u64 - claim, Ordering::Relaxed);
        } else {
            total.fetch_sub(claim - got as u64, Ordering::Relaxed);
        }
        self.held += got;
        counters
            .peak_buffered_bytes
            .fetch_max(total.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(())
    }

    /// The frame just read (version, kind, payload), as a shared buffer:
    /// the memory leaves with it (payloads decoded from it slice it, see
    /// [`codec::decode_shared`]). It stays counted in the budget until the
    /// next [`FrameBuffer::trim`], that is, until the envelope was handed
    /// over (from then [`TransportConfig::inbound_bytes`] counts it).
    fn take_frame(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }

    /// Between frames: a buffer taken by its frame, or left large by a
    /// large frame, is given back to the budget.
    fn trim(&mut self) {
        self.buf.clear();
        if self.buf.capacity() == 0 || self.buf.capacity() > RETAINED_READ_BUFFER_BYTES {
            self.buf = Vec::new();
            self.release();
        }
    }

    fn release(&mut self) {
        let held = std::mem::take(&mut self.held) as u64;
        if let Some((counters, _)) = self.budget {
            counters.buffered_bytes.fetch_sub(held, Ordering::Relaxed);
        }
    }
}

impl Drop for FrameBuffer<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// How long [`read_frame`] waits for bytes.
#[derive(Clone, Copy)]
struct ReadLimits {
    /// For the header of the next frame to arrive.
    idle: Duration,
    /// For each further piece of a frame that has begun.
    stall: Duration,
}

impl ReadLimits {
    fn of(cfg: &TransportConfig) -> ReadLimits {
        ReadLimits {
            idle: cfg.idle_timeout,
            stall: cfg.stall_timeout,
        }
    }
}

/// Reads one frame's body (version, kind, payload) into `fb` and returns
/// its version and kind; the payload is `fb.buf[2..]`. The length is
/// checked against `limit` before anything is allocated, memory is taken in
/// pieces of at most [`READ_CHUNK_BYTES`] as bytes arrive (a header alone
/// buys none), and the checksum is checked before anything is interpreted.
/// A header that takes longer than `limits.idle`, or a piece of the body
/// longer than `limits.stall`, ends the read with [`FrameError::Timeout`].
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
    fb: &mut FrameBuffer<'_>,
    limits: ReadLimits,
) -> Result<(u8, u8), FrameError> {
    let eof_or_io = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Eof
        } else {
            FrameError::Io(e)
        }
    };
    let mut header = [0u8; FRAME_HEADER_BYTES];
    timeout(limits.idle, r.read_exact(&mut header))
        .await
        .map_err(|_| FrameError::Timeout("no frame began"))?
        .map_err(eof_or_io)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    if len < 2 {
        return Err(FrameError::TooShort(len));
    }
    fb.buf.clear();
    let mut filled = 0;
    while filled < len {
        if filled == fb.buf.len() {
            let piece = (len - filled).min(READ_CHUNK_BYTES);
            fb.reserve(piece, len)?;
            fb.buf.resize(filled + piece, 0);
        }
        let n = timeout(limits.stall, r.read(&mut fb.buf[filled..]))
            .await
            .map_err(|_| FrameError::Timeout("a frame stalled"))?
            .map_err(eof_or_io)?;
        if n == 0 {
            return Err(FrameError::Eof);
        }
        filled += n;
    }
    if checksum(&fb.buf) != crc {
        return Err(FrameError::Checksum);
    }
    Ok((fb.buf[0], fb.buf[1]))
}

/// A short reason for an IO error that is stable across retries (no
/// addresses or counters), so repeated failures compare equal.
fn io_reason(e: &io::Error) -> String {
    e.kind().to_string()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"", b"0123456789abcdef"));
    }
}
