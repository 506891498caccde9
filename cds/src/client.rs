//! A blocking HTTP client to the KV nodes (what `cdsctl kv` and `cdsctl top` use) that talks to any node and
//! follows the leader's redirects itself.
//!
//! Redirects are followed by hand rather than by ureq because a PUT's body
//! must be sent again to the new location and because every hop, and every
//! "no leader yet" answer during an election, has to fit in one overall
//! deadline: a client command never hangs on a cluster that cannot answer.
//!
//! A redirect is followed only to an HTTP address of the cluster's
//! configuration (`cluster.json`): whoever answers at a node's address
//! must not be able to send our writes, and our admin token, to a server
//! of its own and have us report success ([`Access`]).
//!
//! Writes carry a client session ([`Session`]: a random id, and a sequence
//! number per command), so retrying one after an unknown outcome (a
//! timeout, a reset, a `503`) is safe: the state machine applies each
//! sequence number once and answers a retry with the first reply.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::error::{bail, Context, Describe, Error, Result};
use serde_json::Value;
use ureq::Agent;

use crate::devcluster::directory::ClusterFile;
use crate::kv::{CLIENT_ID_HEADER, CLIENT_SEQ_HEADER};
use crate::status::Status;

/// How long one HTTP exchange may take (a paused node never answers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Redirect hops followed before giving up (a leader changing under us
/// costs one or two).
const MAX_HOPS: usize = 5;

/// A blocking HTTP client with the settings every command shares; over
/// HTTPS it trusts only `tls`'s roots (the cluster CA).
fn agent(tls: Option<ureq::tls::TlsConfig>) -> Agent {
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(REQUEST_TIMEOUT));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// How a command reaches one cluster: the client (plain HTTP, or HTTPS
/// trusting only the cluster CA when its nodes serve HTTPS), where a
/// redirect may lead (the HTTP addresses of `cluster.json`'s nodes), and
/// the admin token that `/admin/*` requests carry.
#[derive(Debug, Clone)]
pub struct Access {
    agent: Agent,
    scheme: &'static str,
    known: Vec<String>,
    admin_token: String,
}

impl Access {
    /// The access `cluster.json` gives; fails when a TLS cluster's CA
    /// certificate cannot be read.
    pub fn of(c: &ClusterFile) -> Result<Access> {
        let (scheme, tls) = match c.ca_path() {
            Some(ca) => (
                "https",
                Some(
                    crate::tls::http_client_tls(&ca)
                        .with_context(|| format!("the cluster CA {}", ca.display()))?,
                ),
            ),
            None => ("http", None),
        };
        Ok(Access {
            agent: agent(tls),
            scheme,
            known: c.nodes.iter().map(|n| n.http_addr.clone()).collect(),
            admin_token: c.admin_token.clone(),
        })
    }

    /// The URL of `path` on the node at `addr`.
    fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    /// The URL to go to for a redirect from `from` to `location`, or an
    /// error naming the address when it is not one of the cluster's.
    fn follow(&self, from: &str, location: &str) -> Result<String> {
        let prefix = format!("{}://", self.scheme);
        let authority = |url: &'_ str| -> Option<String> {
            let rest = url.strip_prefix(prefix.as_str())?;
            Some(
                rest.split(['/', '?', '#'])
                    .next()
                    .unwrap_or(rest)
                    .to_owned(),
            )
        };
        // A path on the same node.
        if location.starts_with('/') && !location.starts_with("//") {
            if let Some(a) = authority(from) {
                return Ok(self.url(&a, location));
            }
        }
        let Some(to) = authority(location) else {
            bail!(Cluster,
                "refusing to follow a redirect to {location:?}: not an {prefix} address of this cluster"
            );
        };
        let to = to.as_str();
        let same = |known: &str| {
            known == to
                || matches!(
                    (known.parse::<std::net::SocketAddr>(), to.parse::<std::net::SocketAddr>()),
                    (Ok(a), Ok(b)) if a == b
                )
        };
        if !self.known.iter().any(|k| same(k)) {
            bail!(
                Cluster,
                "refusing to follow a redirect from {from} to {to}: not the HTTP address \
                 of any node in cluster.json ({})",
                self.known.join(", ")
            );
        }
        Ok(location.to_owned())
    }
}

/// One command's place in a client session: the headers
/// `X-Client-Id` / `X-Client-Seq` every attempt at the command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The client's id.
    pub client: u64,
    /// The command's sequence number.
    pub seq: u64,
}

/// A client session: a random 64-bit id and the sequence numbers of its
/// commands, from 1. A session must have one command in flight at a time
/// (the node keeps the reply of the last one only): take a [`Stamp`] per
/// command with [`Session::next`], and send every retry of that command
/// with the same stamp.
#[derive(Debug, Clone)]
pub struct Session {
    client: u64,
    next_seq: u64,
}

impl Session {
    /// A new session with a random id from the OS (`/dev/urandom`): two
    /// clients choosing the same id would answer each other's commands.
    pub fn new() -> Result<Session> {
        let mut buf = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .context("reading 8 random bytes from /dev/urandom for a client session id")?;
        Ok(Session::with_id(u64::from_le_bytes(buf)))
    }

    /// The session's client id.
    pub fn id(&self) -> u64 {
        self.client
    }

    /// A new session with the given id.
    pub fn with_id(client: u64) -> Session {
        Session {
            client,
            next_seq: 1,
        }
    }

    /// The stamp of the next command.
    pub fn next_stamp(&mut self) -> Stamp {
        let seq = self.next_seq;
        self.next_seq += 1;
        Stamp {
            client: self.client,
            seq,
        }
    }
}

/// The answer to one request: status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The `error` field of a JSON error body, or the body as text.
    pub fn error_text(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// A request, described so it can be sent again after a redirect.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// GET.
    Get,
    /// PUT with a body.
    Put,
    /// DELETE.
    Delete,
    /// POST with a body.
    Post,
}

/// Percent-encodes a key for use as one path segment (everything but the
/// RFC 3986 unreserved characters), so keys with '/', '?' or spaces reach
/// the node intact.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds `headers` to a request.
fn with_headers<B>(
    mut req: ureq::RequestBuilder<B>,
    headers: &[(&str, String)],
) -> ureq::RequestBuilder<B> {
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req
}

/// One exchange, no redirects followed. Returns the reply and, for a
/// redirect, its Location. `/admin/*` requests carry `admin_token`,
/// session writes their `stamp`.
fn send_once(
    agent: &Agent,
    method: Method,
    url: &str,
    body: &[u8],
    admin_token: Option<&str>,
    stamp: Option<Stamp>,
) -> Result<(Reply, Option<String>), ureq::Error> {
    let mut headers = Vec::new();
    if let Some(t) = admin_token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    if let Some(st) = stamp {
        headers.push((CLIENT_ID_HEADER, st.client.to_string()));
        headers.push((CLIENT_SEQ_HEADER, st.seq.to_string()));
    }
    let resp = match method {
        Method::Get => with_headers(agent.get(url), &headers).call(),
        Method::Delete => with_headers(agent.delete(url), &headers).call(),
        Method::Put => with_headers(agent.put(url), &headers).send(body),
        Method::Post => {
            headers.push(("content-type", "application/json".to_owned()));
            with_headers(agent.post(url), &headers).send(body)
        }
    }?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Values may be large (bench, user data); cap what we read at 64 MiB.
    let body = resp
        .into_body()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?;
    Ok((Reply { status, body }, location))
}

/// Sends `method path` to the first node of `nodes` (HTTP addresses) that
/// answers, following redirects to the leader and retrying "no leader",
/// "busy" and unknown-outcome answers, and requests that got no answer,
/// until `deadline`.
///
/// A write with a `stamp` (its session's id and seq) is applied once
/// however often it is sent. Without one, only send requests that may
/// apply twice (reads, admin calls with absolute targets). `/admin/*`
/// requests carry `access`'s admin token; a redirect outside `access`'s
/// addresses fails the request at once.
pub fn request(
    access: &Access,
    nodes: &[String],
    method: Method,
    path: &str,
    body: &[u8],
    stamp: Option<Stamp>,
    deadline: Instant,
) -> Result<Reply> {
    if nodes.is_empty() {
        bail!(Cluster, "no node to send to");
    }
    let mut start = 0usize;
    loop {
        let mut url = access.url(&nodes[start], path);
        let mut hops = 0;
        let token = path
            .starts_with("/admin/")
            .then_some(access.admin_token.as_str());
        let outcome = loop {
            match send_once(&access.agent, method, &url, body, token, stamp) {
                Ok((reply, Some(loc))) if (300..400).contains(&reply.status) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        break Err(Error::Cluster(format!(
                            "more than {MAX_HOPS} redirects, last to {loc}"
                        )));
                    }
                    url = access.follow(&url, &loc)?;
                }
                Ok((reply, _)) if reply.status == 503 => {
                    break Err(Error::Refused {
                        what: format!("{url} answered"),
                        status: reply.status,
                        text: reply.error_text(),
                    });
                }
                Ok((reply, _)) => break Ok(reply),
                Err(e) => {
                    break Err(Error::NoAnswer {
                        url,
                        error: e.to_string(),
                    })
                }
            }
        };
        let failed = match outcome {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(failed.during("gave up at the deadline".to_owned()));
        }
        // Try the next node; pause after a full round so an election can
        // finish instead of being hammered.
        start += 1;
        if start == nodes.len() {
            start = 0;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET path` on one node, no redirect followed, its 200 answer parsed
/// as JSON.
fn get_json<T: serde::de::DeserializeOwned>(
    access: &Access,
    http_addr: &str,
    path: &str,
) -> Result<T> {
    let url = access.url(http_addr, path);
    let (reply, _) = send_once(&access.agent, Method::Get, &url, &[], None, None).map_err(|e| {
        Error::NoAnswer {
            url: url.clone(),
            error: e.to_string(),
        }
    })?;
    if reply.status != 200 {
        return Err(Error::Refused {
            what: format!("{url} answered"),
            status: reply.status,
            text: reply.error_text(),
        });
    }
    serde_json::from_slice(&reply.body).with_context(|| format!("parsing {url}"))
}

/// One node's `/groups`: group id -> the leader that node knows of.
pub fn group_leaders(access: &Access, http_addr: &str) -> Result<BTreeMap<u64, u64>> {
    let v: Value = get_json(access, http_addr, "/groups")?;
    let list = v
        .get("groups")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Cluster(format!("{http_addr}/groups: no groups list")))?;
    Ok(list
        .iter()
        .filter_map(|g| {
            let group = g.get("group")?.as_u64()?;
            let leader = g.get("leader")?.as_u64()?;
            Some((group, leader))
        })
        .collect())
}

/// Fetches one node's `/status` (one request, no redirect).
pub fn status(access: &Access, http_addr: &str) -> Result<Status> {
    get_json(access, http_addr, "/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_numbers_its_commands_from_one() {
        let mut s = Session::with_id(42);
        assert_eq!(s.next_stamp(), Stamp { client: 42, seq: 1 });
        assert_eq!(s.next_stamp(), Stamp { client: 42, seq: 2 });
        let (a, b) = (Session::new().unwrap(), Session::new().unwrap());
        assert_ne!(a.client, b.client, "random ids");
    }

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(encode_key("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_key("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    #[test]
    fn redirects_lead_only_to_the_clusters_addresses() {
        let access = Access {
            agent: agent(None),
            scheme: "http",
            known: vec!["127.0.0.1:8001".into(), "127.0.0.1:8002".into()],
            admin_token: String::new(),
        };
        let from = "http://127.0.0.1:8001/kv/a";
        assert_eq!(
            access
                .follow(from, "http://127.0.0.1:8002/kv/a?x=1")
                .unwrap(),
            "http://127.0.0.1:8002/kv/a?x=1"
        );
        assert_eq!(
            access.follow(from, "/kv/b").unwrap(),
            "http://127.0.0.1:8001/kv/b"
        );
        for bad in [
            "http://127.0.0.1:9999/kv/a",
            "http://evil.example:8002/kv/a",
            "http://user@127.0.0.1:8002/kv/a",
            "https://127.0.0.1:8002/kv/a",
            "//127.0.0.1:9999/kv/a",
        ] {
            let e = access.follow(from, bad).unwrap_err().to_string();
            assert!(e.contains("refusing to follow a redirect"), "{bad}: {e}");
        }
        let e = access
            .follow(from, "http://127.0.0.1:9999/kv/a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("127.0.0.1:9999"), "{e}");
    }

    #[test]
    fn nothing_listening_is_an_error_by_the_deadline() {
        let port = crate::devcluster::directory::pick_ports(1).unwrap()[0];
        let started = Instant::now();
        let access = Access {
            agent: agent(None),
            scheme: "http",
            known: vec![port.to_string()],
            admin_token: String::new(),
        };
        let err = request(
            &access,
            &[port.to_string()],
            Method::Get,
            "/kv/a",
            &[],
            None,
            Instant::now() + Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(format!("{err:#}").contains("did not answer"), "{err:#}");
    }
}
