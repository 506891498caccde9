//! TLS material for a cluster: a local CA, one certificate and key per
//! node, and the rustls configurations built from them.
//!
//! `cdsctl cert` and `cdsctl kv up --tls` create the files
//! ([`create_ca`], [`issue_node`]); a node loads them from the paths its
//! config names ([`TlsPaths`]). Everything that turns files into rustls
//! settings lives here, so the Raft transport (mutual TLS, through
//! [`raft_core::runtime::transport::TransportTls`]), the HTTP server
//! (server authentication, [`http_server_config`]) and the HTTP client
//! ([`http_client_tls`]) trust the same CA in the same way.
//!
//! Keys are secrets: they are written owner-only (0600, in a 0700
//! directory) through [`crate::secret`], and a node refuses a key file that
//! others can read. Certificates are not secret but are written the same
//! way, for one rule.
//!
//! The CA is a development CA: its key sits next to the certificates it
//! signed, so whoever can read the directory can issue certificates. A
//! production cluster would keep the CA key elsewhere and give each node
//! only its own key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{bail, Context, Result};
use raft_core::runtime::transport::{node_cert_name, rustls, TransportTls};
use raft_core::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::secret;

/// The CA's certificate, in a TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key, in a TLS directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The CA's common name (also how it is found again to sign more).
const CA_NAME: &str = "cds-raft local CA";

/// Where a node finds its TLS material (fields of its config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA's certificate (PEM): every peer's certificate must
    /// be signed by it.
    pub ca: PathBuf,
    /// This node's certificate (PEM), naming `node-ID.cds-raft`.
    pub cert: PathBuf,
    /// This node's private key (PEM); refused if others can read it.
    pub key: PathBuf,
}

impl TlsPaths {
    /// The files `issue_node` writes for node `id` in `dir`.
    pub fn of_node(dir: &Path, id: NodeId) -> TlsPaths {
        TlsPaths {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("node-{id}.pem")),
            key: dir.join(format!("node-{id}-key.pem")),
        }
    }
}

fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())
        .context("the CA's certificate parameters")?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p);
    Ok(p)
}

fn validity(p: &mut rcgen::CertificateParams) {
    // A development CA: valid from a fixed past date for a century, so a
    // dev cluster never meets an expiry.
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2125, 1, 1);
}

/// Creates `dir` (0700) and a CA in it, unless one is there already;
/// returns true if it created one.
pub fn create_ca(dir: &Path) -> Result<bool> {
    secret::private_dir(dir)?;
    let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let pair = rcgen::KeyPair::generate().context("generating the CA key")?;
    let ca = ca_params()?
        .self_signed(&pair)
        .context("signing the CA certificate")?;
    secret::write_private(&key, pair.serialize_pem().as_bytes())?;
    secret::write_private(&cert, ca.pem().as_bytes())?;
    Ok(true)
}

/// Issues node `id` a certificate signed by the CA in `dir` (see
/// [`create_ca`]), naming `node-ID.cds-raft` (what peers check), `localhost`
/// and `ips` (what HTTPS clients check), and writes it and its new key.
pub fn issue_node(dir: &Path, id: NodeId, ips: &[IpAddr]) -> Result<TlsPaths> {
    let ca_key_path = dir.join(CA_KEY_FILE);
    secret::check_private(&ca_key_path)
        .with_context(|| format!("refusing the CA key {}", ca_key_path.display()))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("reading {}", ca_key_path.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing {}", ca_key_path.display()))?;
    // The issuer is the CA's name and key: the same parameters that made
    // the CA certificate rebuild it.
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let mut p = rcgen::CertificateParams::new(vec![node_cert_name(id), "localhost".to_owned()])
        .with_context(|| format!("node {id}'s certificate parameters"))?;
    p.subject_alt_names
        .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    p.distinguished_name
        .push(rcgen::DnType::CommonName, node_cert_name(id));
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut p);
    let pair = rcgen::KeyPair::generate().context("generating a node key")?;
    let cert = p
        .signed_by(&pair, &issuer)
        .with_context(|| format!("signing node {id}'s certificate"))?;
    let paths = TlsPaths::of_node(dir, id);
    secret::write_private(&paths.key, pair.serialize_pem().as_bytes())?;
    secret::write_private(&paths.cert, cert.pem().as_bytes())?;
    Ok(paths)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!(Invalid, "{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    secret::check_private(path)
        .with_context(|| format!("refusing the private key {}", path.display()))?;
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the private key {}", path.display()))
}

/// The Raft transport's mutual TLS from a node's files. Refuses a key file
/// others can read.
pub fn load_transport(paths: &TlsPaths) -> Result<TransportTls> {
    let ca = read_certs(&paths.ca)?;
    let chain = read_certs(&paths.cert)?;
    let key = read_key(&paths.key)?;
    TransportTls::new(&ca, chain, key).context("the transport's TLS settings")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTP API's server side: presents the node's certificate; clients
/// are not asked for one (the admin credential authenticates them).
pub fn http_server_config(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>> {
    let chain = read_certs(&paths.cert)?;
    let key = read_key(&paths.key)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the node's certificate and key")?;
    Ok(Arc::new(cfg))
}

/// An HTTPS client's TLS side for tokio (`kv bench`): trusts only the
/// cluster CA in `ca`, presents no certificate.
pub fn http_rustls_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("a certificate in {}", ca.display()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The HTTP client's side (ureq, as `cdsctl kv` uses it): trusts only the
/// cluster CA in `ca`, with the ring provider.
pub fn http_client_tls(ca: &Path) -> Result<ureq::tls::TlsConfig> {
    let roots: Vec<_> = read_certs(ca)?
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_load_and_a_shared_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        assert!(create_ca(&dir).unwrap());
        assert!(!create_ca(&dir).unwrap(), "an existing CA is reused");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let p = issue_node(&dir, 1, &[ip]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in [&p.ca, &p.cert, &p.key, &dir.join(CA_KEY_FILE)] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        load_transport(&p).unwrap();
        http_server_config(&p).unwrap();
        http_client_tls(&p.ca).unwrap();
        std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_transport(&p).unwrap_err());
        assert!(
            e.contains("refusing the private key") && e.contains("chmod 600"),
            "{e}"
        );
    }

    /// The HTTP configurations agree: a ureq agent that trusts the CA gets
    /// an answer from a server with a node's config, by IP and by name; one
    /// that trusts another CA does not.
    #[test]
    fn https_client_trusts_the_cluster_ca_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tmp = tempfile::tempdir().unwrap();
        let (dir, other) = (tmp.path().join("a"), tmp.path().join("b"));
        create_ca(&dir).unwrap();
        create_ca(&other).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let p = issue_node(&dir, 1, &[ip]).unwrap();
        let server = tokio_rustls::TlsAcceptor::from(http_server_config(&p).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        // A minimal HTTPS responder: one fixed answer per connection.
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = server.accept(s).await else {
                        return;
                    };
                    let mut req = [0u8; 1024];
                    let _ = s.read(&mut req).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let get = |ca: &Path, host: &str| -> Result<String, Box<dyn std::error::Error>> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .tls_config(http_client_tls(ca)?)
                .timeout_global(Some(std::time::Duration::from_secs(10)))
                .build()
                .into();
            Ok(agent
                .get(&format!("https://{host}:{port}/"))
                .call()?
                .body_mut()
                .read_to_string()?)
        };
        assert_eq!(get(&p.ca, "127.0.0.1").unwrap(), "hi");
        assert_eq!(get(&p.ca, "localhost").unwrap(), "hi");
        let e = get(&other.join(CA_CERT_FILE), "127.0.0.1").unwrap_err();
        assert!(format!("{e:#}").to_lowercase().contains("cert"), "{e:#}");
        rt.shutdown_background();
    }
}
