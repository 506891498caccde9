//! Local CDS clusters as real processes: what `cdsctl cds` does.
//!
//! [`up`] writes a cluster directory (`DIR/cds.json`, each process's
//! private config), spawns the Master and BlockServer processes detached,
//! creates the BlockGroups once the servers have registered, and waits
//! until every group has a leader. Every later operation (`status`,
//! `down`, the faults) finds the processes again through the directory,
//! as the KV's [`crate::devcluster`] does, and uses its process
//! handling: a recorded pid counts only while its command line names the
//! process's config file, so a stale pid never signals a stranger.
//!
//! Processes are named `m1`, `m2`, ... (Masters) and `b1`, `b2`, ...
//! (BlockServers).

mod directory;
pub mod fault_file;
pub mod faults;
mod lifecycle;
mod nodes;

pub use directory::{CdsCluster, ProcName, Role, CDS_FILE};
pub use faults::{fail_disk, heal, partition};
pub use lifecycle::{
    down, fault, restart, status, up, Fault, ProcReport, UpOptions, DEFAULT_GROUPS,
};
pub use nodes::{add_server, drain, remove_server, NewServer};
