//! A blocking client of the Master's API that finds the leading Master
//! itself: what BlockServers, volume clients and `cdsctl` use.
//!
//! It sends a request to the Master it last found leading; a replica that
//! does not lead names the leader (followed only to an address of the
//! client's own Master list, so a replica cannot send our token
//! elsewhere), and an unreachable or leaderless Master is skipped, all
//! within one deadline.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::Agent;

use super::api::ApiError;

/// One HTTP exchange's limit (a paused Master never answers).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read (a cluster view of thousands of groups).
const MAX_ANSWER_BYTES: u64 = 64 << 20;
/// Pause between rounds over every Master.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// What a call to the Master came to, when not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterCallError {
    /// The Master refused the request (`kind` says why for a program:
    /// `no_volume`, `volume_exists`, `bad_volume`, `unauthorized`, ...).
    #[error("{error} ({kind}, HTTP {status})")]
    Refused {
        status: u16,
        kind: String,
        error: String,
    },
    /// No Master led and answered before the deadline.
    #[error("no Master answered within {0:?}: {1}")]
    Unavailable(Duration, String),
    /// The leader changed while a change was in flight: it may or may not
    /// have been made.
    #[error("the outcome is unknown: {0}")]
    UnknownOutcome(String),
    /// An answer that does not parse.
    #[error("a Master answer that does not parse: {0}")]
    Protocol(String),
}

impl MasterCallError {
    /// The `kind` of a refusal (empty otherwise).
    pub fn kind(&self) -> &str {
        match self {
            MasterCallError::Refused { kind, .. } => kind,
            _ => "",
        }
    }
}

/// The client.
pub struct MasterClient {
    agent: Agent,
    /// The Masters' HTTP addresses (`host:port`).
    masters: Vec<String>,
    token: String,
    /// Index in `masters` of the one believed to lead.
    hint: Mutex<usize>,
    deadline: Duration,
}

impl std::fmt::Debug for MasterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterClient")
            .field("masters", &self.masters)
            .finish_non_exhaustive()
    }
}

enum Method {
    Get,
    Post,
    Delete,
}

impl MasterClient {
    /// A client of the Masters at `masters` presenting `token` (the
    /// cluster's, or the admin token for admin calls), giving each call
    /// `deadline`.
    pub fn new(masters: Vec<String>, token: impl Into<String>, deadline: Duration) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(EXCHANGE_TIMEOUT))
            .build()
            .into();
        MasterClient {
            agent,
            masters,
            token: token.into(),
            hint: Mutex::new(0),
            deadline,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, MasterCallError> {
        self.call(Method::Get, path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, MasterCallError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| MasterCallError::Protocol(e.to_string()))?;
        self.call(Method::Post, path, Some(bytes))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, MasterCallError> {
        self.call(Method::Delete, path, None)
    }

    /// `GET /v1/status` of one Master (no leader search).
    pub fn status_of(&self, addr: &str) -> Result<super::api::MasterStatus, MasterCallError> {
        let (status, body) = self
            .exchange(&Method::Get, addr, "/v1/status", None)
            .map_err(|e| MasterCallError::Unavailable(EXCHANGE_TIMEOUT, e))?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| MasterCallError::Protocol(e.to_string()))
    }

    fn exchange(
        &self,
        method: &Method,
        addr: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("http://{addr}{path}");
        let auth = format!("Bearer {}", self.token);
        let resp = match method {
            Method::Get => self.agent.get(&url).header("authorization", &auth).call(),
            Method::Delete => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            Method::Post => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or(b"{}")),
        }
        .map_err(|e| format!("{addr}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok((status, body))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, MasterCallError> {
        if self.masters.is_empty() {
            return Err(MasterCallError::Unavailable(
                Duration::ZERO,
                "no Master addresses".into(),
            ));
        }
        let start = Instant::now();
        let mut at = *self.hint.lock().unwrap_or_else(|e| e.into_inner()) % self.masters.len();
        let mut tried = 0usize;
        let mut last = String::from("not tried");
        loop {
            if tried > 0 && start.elapsed() >= self.deadline {
                return Err(MasterCallError::Unavailable(self.deadline, last));
            }
            let addr = &self.masters[at];
            match self.exchange(&method, addr, path, body.as_deref()) {
                Ok((200, bytes)) => {
                    *self.hint.lock().unwrap_or_else(|e| e.into_inner()) = at;
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| MasterCallError::Protocol(e.to_string()));
                }
                Ok((503, bytes)) => {
                    let err: Option<ApiError> = serde_json::from_slice(&bytes).ok();
                    match err {
                        Some(e) if e.kind == "unknown_outcome" => {
                            return Err(MasterCallError::UnknownOutcome(e.error))
                        }
                        Some(e) => {
                            last = format!("{addr}: {}", e.error);
                            let to = e
                                .leader_http
                                .and_then(|l| self.masters.iter().position(|m| *m == l));
                            match to {
                                Some(i) if i != at => {
                                    at = i;
                                    tried += 1;
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        None => last = format!("{addr}: HTTP 503"),
                    }
                }
                Ok((status, bytes)) => return Err(refusal(status, &bytes)),
                Err(e) => last = e,
            }
            at = (at + 1) % self.masters.len();
            tried += 1;
            if tried.is_multiple_of(self.masters.len()) {
                std::thread::sleep(ROUND_PAUSE);
            }
        }
    }
}

fn refusal(status: u16, body: &[u8]) -> MasterCallError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => MasterCallError::Refused {
            status,
            kind: e.kind,
            error: e.error,
        },
        Err(_) => MasterCallError::Refused {
            status,
            kind: "http".into(),
            error: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        },
    }
}
