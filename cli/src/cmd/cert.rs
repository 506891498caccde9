//! `cdsctl cert`: a local CA and a certificate and key per node, made by
//! [`cds::tls`] and listed on stdout.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use cds::tls::{create_ca, issue_node, CA_CERT_FILE};
use raft_core::runtime::transport::node_cert_name;

/// `cdsctl cert`: a CA and certificates for nodes 1..=N.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Where to write the files (created owner-only); an existing CA there
    /// is reused.
    #[arg(long)]
    pub dir: PathBuf,
    /// Issue certificates for nodes 1 to N.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// IP addresses the certificates also name (for HTTPS clients).
    #[arg(long = "ip", default_value = "127.0.0.1")]
    pub ips: Vec<IpAddr>,
}

/// Runs `cdsctl cert`.
pub fn run(args: CertArgs) -> Result<()> {
    if !(1..=1000).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 1000, got {}", args.nodes);
    }
    let created = create_ca(&args.dir)?;
    outln!(
        "{} CA {}",
        if created { "created" } else { "reusing" },
        args.dir.join(CA_CERT_FILE).display()
    );
    for id in 1..=args.nodes {
        let p = issue_node(&args.dir, id, &args.ips)?;
        outln!(
            "node {id}: {} {} ({})",
            p.cert.display(),
            p.key.display(),
            node_cert_name(id)
        );
    }
    Ok(())
}
