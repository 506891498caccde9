//! The wire codec: every message round-trips field for field, and no input
//! (truncated, random, bit-flipped, hostile lengths) makes decoding panic or
//! allocate past what the input itself holds.
#![cfg(feature = "runtime")]

use raft_core::runtime::codec::{
    self, decode, encode, validate, CodecError, CODEC_VERSION, MAX_CONF_NODES, MAX_DATA_BYTES,
    MAX_ENTRIES_PER_MESSAGE,
};
use raft_core::runtime::Envelope;
use raft_core::{
    Bytes, ConfState, Entry, EntryKind, Message, MessageBody, SnapshotFile, SnapshotMeta,
};

fn env(group: u64, body: MessageBody) -> Envelope {
    Envelope {
        group,
        msg: Message {
            from: 3,
            to: 0xdead_beef_0000_0001,
            term: u64::MAX - 7,
            body,
        },
    }
}

/// One envelope of every body variant, with every field set to a value
/// distinct from its neighbours (so a swapped field fails the round trip).
fn every_variant() -> Vec<Envelope> {
    let meta = SnapshotMeta {
        index: 1000,
        term: 9,
        conf: ConfState {
            index: 998,
            voters: vec![1, 2, 3],
            outgoing: vec![1, 2, 4],
            learners: vec![5],
        },
        files: vec![
            SnapshotFile {
                name: "state.bin".into(),
                size: 123_456,
                crc: 0x1234_5678,
            },
            SnapshotFile {
                name: "ünïcode/ファイル".into(),
                size: 0,
                crc: 0,
            },
        ],
    };
    vec![
        env(
            1,
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 11,
                last_log_term: 12,
                leader_transfer: false,
            },
        ),
        env(
            2,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 13,
                last_log_term: 14,
                leader_transfer: true,
            },
        ),
        env(
            3,
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: false,
            },
        ),
        env(
            4,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
        ),
        env(
            5,
            MessageBody::Append {
                prev_log_index: 20,
                prev_log_term: 21,
                entries: vec![
                    Entry {
                        index: 21,
                        term: 22,
                        kind: EntryKind::Normal,
                        data: b"put k v".to_vec().into(),
                    },
                    Entry {
                        index: 22,
                        term: 22,
                        kind: EntryKind::Noop,
                        data: Bytes::new(),
                    },
                    Entry {
                        index: 23,
                        term: 23,
                        kind: EntryKind::ConfChange,
                        data: vec![0, 1, 2, 255].into(),
                    },
                ],
                leader_commit: 19,
                lease_tick: 77,
            },
        ),
        env(
            6,
            MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
                lease_tick: 0,
            },
        ),
        env(
            7,
            MessageBody::AppendResponse {
                success: true,
                index: 31,
                hint_index: 32,
                hint_term: 33,
                lease_tick: 34,
            },
        ),
        env(
            8,
            MessageBody::AppendResponse {
                success: false,
                index: 41,
                hint_index: 42,
                hint_term: 43,
                lease_tick: 44,
            },
        ),
        env(
            9,
            MessageBody::Heartbeat {
                commit: 51,
                read_round: 52,
                lease_tick: 53,
                quiesce: false,
            },
        ),
        env(
            10,
            MessageBody::HeartbeatResponse {
                read_round: 61,
                lease_tick: 62,
            },
        ),
        env(11, MessageBody::TimeoutNow),
        env(12, MessageBody::InstallSnapshot { meta }),
        env(
            13,
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta::default(),
            },
        ),
        env(
            14,
            MessageBody::SnapshotChunkRequest {
                index: 1000,
                file: 1,
                offset: 4096,
                len: 65536,
            },
        ),
        env(
            15,
            MessageBody::SnapshotChunk {
                index: 1000,
                file: 1,
                offset: 4096,
                data: (0..=255).collect(),
                crc: raft_core::checksum(&(0..=255).collect::<Vec<u8>>()),
                gone: false,
            },
        ),
        env(
            u64::MAX,
            MessageBody::SnapshotChunk {
                index: 7,
                file: u32::MAX,
                offset: u64::MAX,
                data: Bytes::new(),
                crc: 0,
                gone: true,
            },
        ),
        // Version 2: the quiesce flag.
        env(
            9,
            MessageBody::Heartbeat {
                commit: 54,
                read_round: 0,
                lease_tick: 55,
                quiesce: true,
            },
        ),
    ]
}

fn encoded(e: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode(e, &mut out);
    out
}

/// A fixed-seed linear congruential generator: reproducible noise.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn every_variant_round_trips() {
    let all = every_variant();
    // Every variant is present.
    let mut kinds: Vec<&str> = all.iter().map(|e| e.msg.body.kind_name()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 12, "{kinds:?}");
    for e in &all {
        assert_eq!(validate(e), Ok(()));
        let bytes = encoded(e);
        assert_eq!(bytes[0], CODEC_VERSION);
        assert_eq!(decode(&bytes).as_ref(), Ok(e), "{}", e.msg.body.kind_name());
    }
}

/// `encoded_len` is what byte-bounded queues count an envelope for: it
/// must be exactly what `encode` writes, for every variant.
#[test]
fn encoded_len_is_the_encoding_s_length() {
    for e in every_variant() {
        assert_eq!(
            codec::encoded_len(&e),
            encoded(&e).len(),
            "{}",
            e.msg.body.kind_name()
        );
    }
}

/// `decode_shared` hands out payloads that are slices of the input buffer
/// (no copy), equal to what `decode` copies out.
#[test]
fn decode_shared_slices_payloads_out_of_the_buffer() {
    for e in every_variant() {
        let buf = Bytes::from(encoded(&e));
        let shared = codec::decode_shared(&buf).expect("decodes");
        assert_eq!(shared, e, "{}", e.msg.body.kind_name());
        let payloads: Vec<Bytes> = match shared.msg.body {
            MessageBody::Append { entries, .. } => entries.into_iter().map(|e| e.data).collect(),
            MessageBody::SnapshotChunk { data, .. } => vec![data],
            _ => continue,
        };
        let (lo, hi) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
        for p in payloads.iter().filter(|p| !p.is_empty()) {
            let at = p.as_ptr() as usize;
            assert!(at >= lo && at + p.len() <= hi, "a payload was copied");
        }
    }
}

#[test]
fn encoding_appends_and_is_deterministic() {
    let e = &every_variant()[4];
    let mut out = vec![9, 9];
    encode(e, &mut out);
    assert_eq!(&out[..2], &[9, 9]);
    assert_eq!(&out[2..], &encoded(e)[..]);
}

#[test]
fn every_truncation_is_an_error() {
    for e in every_variant() {
        let bytes = encoded(&e);
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Err(CodecError::Truncated { .. }) => {}
                other => panic!(
                    "{} cut at {cut}/{}: {other:?}",
                    e.msg.body.kind_name(),
                    bytes.len()
                ),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for e in every_variant() {
        let mut bytes = encoded(&e);
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(CodecError::TrailingBytes(1)));
    }
}

#[test]
fn unknown_version_tag_kind_and_bool_are_errors() {
    let all = every_variant();
    let mut b = encoded(&all[0]);
    b[0] = CODEC_VERSION + 1;
    assert_eq!(
        decode(&b),
        Err(CodecError::UnknownVersion(CODEC_VERSION + 1))
    );

    let mut b = encoded(&all[10]); // TimeoutNow: the tag is the last byte.
    let tag_at = b.len() - 1;
    b[tag_at] = 200;
    assert_eq!(
        decode(&b),
        Err(CodecError::UnknownTag {
            at: tag_at,
            tag: 200
        })
    );

    // RequestVote: the first body byte is `pre_vote`.
    let mut b = encoded(&all[0]);
    b[34] = 2;
    assert_eq!(
        decode(&b),
        Err(CodecError::InvalidBool { at: 34, value: 2 })
    );

    // Append: header and tag 34, 4 u64, count u32, then index, term, kind.
    let mut b = encoded(&all[4]);
    let kind_at = 34 + 32 + 4 + 16;
    b[kind_at] = 3;
    assert_eq!(
        decode(&b),
        Err(CodecError::UnknownEntryKind {
            at: kind_at,
            kind: 3
        })
    );
}

/// An Append with a chosen entry count and nothing after it.
fn append_with_count(count: u32) -> Vec<u8> {
    let mut b = encoded(&every_variant()[5]);
    let at = b.len() - 4;
    b[at..].copy_from_slice(&count.to_le_bytes());
    b
}

#[test]
fn hostile_lengths_are_refused_without_allocating() {
    // Over the limit.
    assert!(matches!(
        decode(&append_with_count(MAX_ENTRIES_PER_MESSAGE as u32 + 1)),
        Err(CodecError::OverLimit {
            what: "entries",
            ..
        })
    ));
    // Within the limit but far more than the input holds: refused before
    // any allocation for the entries.
    assert!(matches!(
        decode(&append_with_count(MAX_ENTRIES_PER_MESSAGE as u32)),
        Err(CodecError::Truncated { .. })
    ));
    assert!(matches!(
        decode(&append_with_count(u32::MAX)),
        Err(CodecError::OverLimit { .. })
    ));

    // A chunk whose data length is past MAX_DATA_BYTES.
    let mut b = encoded(&every_variant()[15]);
    let len_at = 34 + 8 + 4 + 8;
    b[len_at..len_at + 4].copy_from_slice(&(MAX_DATA_BYTES as u32 + 1).to_le_bytes());
    assert!(matches!(
        decode(&b),
        Err(CodecError::OverLimit {
            what: "chunk data",
            ..
        })
    ));
    // Within the limit, more than present.
    b[len_at..len_at + 4].copy_from_slice(&(MAX_DATA_BYTES as u32).to_le_bytes());
    assert!(matches!(decode(&b), Err(CodecError::Truncated { .. })));

    // A snapshot meta claiming too many voters.
    let mut b = encoded(&every_variant()[12]);
    let voters_at = 34 + 24;
    b[voters_at..voters_at + 4].copy_from_slice(&(MAX_CONF_NODES as u32 + 1).to_le_bytes());
    assert!(matches!(
        decode(&b),
        Err(CodecError::OverLimit { what: "voters", .. })
    ));
}

#[test]
fn invalid_utf8_file_name_is_an_error() {
    let e = env(
        1,
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                files: vec![SnapshotFile {
                    name: "ab".into(),
                    size: 1,
                    crc: 2,
                }],
                ..SnapshotMeta::default()
            },
        },
    );
    let mut b = encoded(&e);
    let name_at = b.len() - 12 - 2;
    b[name_at] = 0xff;
    assert!(matches!(decode(&b), Err(CodecError::InvalidUtf8 { .. })));
}

#[test]
fn validate_refuses_what_a_receiver_would() {
    let too_many = env(
        1,
        MessageBody::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![
                Entry {
                    index: 1,
                    term: 1,
                    kind: EntryKind::Noop,
                    data: Bytes::new(),
                };
                MAX_ENTRIES_PER_MESSAGE + 1
            ],
            leader_commit: 0,
            lease_tick: 0,
        },
    );
    assert!(matches!(
        validate(&too_many),
        Err(CodecError::OverLimit {
            what: "entries",
            ..
        })
    ));
    let big = env(
        1,
        MessageBody::SnapshotChunk {
            index: 1,
            file: 0,
            offset: 0,
            data: vec![0; MAX_DATA_BYTES + 1].into(),
            crc: 0,
            gone: false,
        },
    );
    assert!(validate(&big).is_err());
    // And the receiver agrees.
    assert!(decode(&encoded(&big)).is_err());
}

/// Decoding never panics; when it succeeds, the input was the canonical
/// encoding of what it decoded to.
fn check_no_panic(bytes: &[u8]) {
    if let Ok(e) = decode(bytes) {
        assert_eq!(encoded(&e), bytes, "decoding is not canonical");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Lcg(0x5eed);
    for i in 0..20_000 {
        let len = (rng.next() % 300) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the inputs get a valid version and tag, to reach the bodies.
        if i % 2 == 0 && b.len() > 34 {
            b[0] = CODEC_VERSION;
            b[33] = (rng.next() % 11) as u8;
        }
        check_no_panic(&b);
    }
}

#[test]
fn bit_flips_never_panic() {
    for e in every_variant() {
        let bytes = encoded(&e);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            check_no_panic(&b);
        }
    }
    // Random multi-byte damage too.
    let mut rng = Lcg(42);
    let all = every_variant();
    for _ in 0..20_000 {
        let mut b = encoded(&all[(rng.next() as usize) % all.len()]);
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % b.len();
            b[at] = rng.next() as u8;
        }
        check_no_panic(&b);
    }
}

#[test]
fn errors_read_clearly() {
    let msg = decode(&[]).unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");
    let msg = decode(&append_with_count(u32::MAX))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("entries") && msg.contains("limit"), "{msg}");
    let _ = codec::MAX_ENVELOPE_BYTES;
}
