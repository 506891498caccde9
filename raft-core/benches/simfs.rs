//! Criterion benchmarks of the simulated disk and of `NodeStorage` on it.
//!
//! `cargo bench -p raft-core --bench simfs`. The simulator persists every
//! `Ready` of every node, so an append and its sync must cost well under a
//! microsecond of the disk's own time. Figures go in the closing notes and
//! the book, never in timed tests.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use raft_core::storage::fs::{Fs, OpenMode, SimFs};
use raft_core::storage::local::{self, LocalOptions};
use raft_core::storage::NodeStorage;
use raft_core::{Entry, EntryKind, Ready};

/// Persists of one entry between fresh stores (bounds the memory a long
/// measurement holds).
const PER_STORE: u64 = 20_000;

fn bench_file(c: &mut Criterion) {
    let fs = SimFs::default();
    fs.create_dir_all(Path::new("/d")).expect("mkdir");
    let mut f = fs
        .open(Path::new("/d/f"), OpenMode::Create)
        .expect("create");
    let buf = [7u8; 128];
    let mut n = 0u64;
    c.bench_function("simfs/write 128 B + sync_data", |b| {
        b.iter(|| {
            n += 1;
            if n == 8192 {
                n = 0;
                f.set_len(0).expect("set_len");
                f.seek(0).expect("seek");
            }
            f.write_all(black_box(&buf)).expect("write");
            f.sync_data().expect("sync");
        })
    });
}

fn persist_one(c: &mut Criterion, name: &str, fresh: impl Fn() -> NodeStorage) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut s = fresh();
                let n = (iters - done).min(PER_STORE);
                let start = Instant::now();
                for i in 1..=n {
                    s.persist(&Ready {
                        entries: vec![Entry {
                            index: i,
                            term: 1,
                            kind: EntryKind::Normal,
                            data: vec![7u8; 100].into_iter().collect(),
                        }],
                        ..Ready::default()
                    })
                    .expect("persist");
                }
                total += start.elapsed();
                done += n;
            }
            total
        })
    });
}

fn bench_node_storage(c: &mut Criterion) {
    let opts = LocalOptions::default();
    persist_one(
        c,
        "node_storage/persist 1 entry of 100 B, local on SimFs",
        || local::open_with(Arc::new(SimFs::default()), Path::new("/n"), &opts).expect("open"),
    );
    persist_one(c, "node_storage/persist 1 entry of 100 B, memory", || {
        NodeStorage::memory(vec![1])
    });
}

criterion_group!(benches, bench_file, bench_node_storage);
criterion_main!(benches);
