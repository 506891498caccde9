//! Criterion benchmarks of the core's hot paths and of the simulator.
//!
//! `cargo bench -p raft-core --bench step`. Figures go in the closing notes
//! and the book, never in timed tests.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::sim::{run, FaultSet, SimConfig};
use raft_core::storage::MemStorage;
use raft_core::{Config, Message, Raft};
use rand_core::SeedableRng;

type Node = Raft<MemStorage>;

fn cluster(n: u64) -> Vec<Node> {
    let voters: Vec<u64> = (1..=n).collect();
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|&id| {
            let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(id));
            Raft::new(Config::new(id), MemStorage::new(voters.clone()), rng).expect("valid")
        })
        .collect();
    for n in nodes.iter_mut() {
        for _ in 0..10 {
            n.tick();
        }
    }
    nodes[0].campaign_now();
    deliver_all(&mut nodes);
    nodes
}

fn drain(nodes: &mut [Node]) -> Vec<Message> {
    let mut out = Vec::new();
    for n in nodes.iter_mut() {
        while n.has_ready() {
            let rd = n.ready();
            n.storage_mut().persist(&rd).expect("persist");
            out.extend(rd.messages.iter().cloned());
            n.advance(&rd);
        }
    }
    out
}

fn deliver_all(nodes: &mut [Node]) {
    let mut msgs = drain(nodes);
    while !msgs.is_empty() {
        for m in std::mem::take(&mut msgs) {
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
        msgs = drain(nodes);
    }
}

fn bench_commit_round(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("propose_replicate_commit_3_nodes", |b| {
        let mut nodes = cluster(3);
        b.iter(|| {
            nodes[0].propose(vec![7; 128], None).expect("leader");
            deliver_all(&mut nodes);
        });
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("follower_step_append_64_entries", |b| {
        b.iter_batched(
            || {
                let mut nodes = cluster(3);
                for i in 0..64u8 {
                    nodes[0].propose(vec![i; 128], None).expect("leader");
                }
                let msgs = drain(&mut nodes[..1]);
                let m = msgs.into_iter().find(|m| m.to == 2).expect("append to 2");
                (nodes, m)
            },
            |(mut nodes, m)| {
                nodes[1].step(m).expect("step");
                drain(&mut nodes[1..2])
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn bench_sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(20);
    let cfg = SimConfig::new(5, 42, 5000, FaultSet::all());
    let steps = run(&cfg).steps;
    g.throughput(Throughput::Elements(steps));
    g.bench_function("seed_42_5000_steps_all_faults", |b| b.iter(|| run(&cfg)));
    g.finish();
}

criterion_group!(benches, bench_commit_round, bench_sim);
criterion_main!(benches);
