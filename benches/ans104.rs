//! Criterion benchmarks for `hb402-ans104`: header parsing (whole and incremental), signature
//! verification per signature type, and streaming deep-hash throughput.
//!
//! ```text
//! cargo bench -p hb402-benches --bench ans104
//! ```
//!
//! The inputs are the committed arbundles fixtures (`crates/ans104/tests/vectors/fixtures`) and,
//! for hashing, deterministic data generated in memory.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hb402_ans104::{
    DEFAULT_MAX_HEADER_BYTES, DataItem, DataItemHasher, HeaderParser, parse_header,
};
use hb402_benches::{DataGenerator, fixture};

/// Feeds `bytes` to a fresh parser in `chunk`-byte pieces until the header is complete.
fn parse_chunked(bytes: &[u8], chunk: usize) -> usize {
    let mut parser = HeaderParser::new(DEFAULT_MAX_HEADER_BYTES);
    for piece in bytes.chunks(chunk) {
        if let Some(parsed) = parser.push(piece).expect("fixture parses") {
            return parsed.header.tags().len();
        }
    }
    panic!("fixture header incomplete");
}

fn header_parse(c: &mut Criterion) {
    let inputs = [
        // Type 2 (Ed25519) with target, anchor and 2 tags: a 226-byte header.
        ("type2_small", fixture("ed25519_tags_target_anchor.ans104")),
        // Type 1 (Arweave) with 30 tags: a 2758-byte header.
        ("type1_30_tags", fixture("arweave_big_header.ans104")),
    ];
    for (name, bytes) in &inputs {
        let header_len = parse_header(bytes, DEFAULT_MAX_HEADER_BYTES)
            .expect("fixture parses")
            .data_offset();
        let mut group = c.benchmark_group(format!("header_parse/{name}"));
        group.throughput(Throughput::Bytes(header_len));
        group.bench_function("parse_header", |b| {
            b.iter(|| parse_header(black_box(bytes), DEFAULT_MAX_HEADER_BYTES).expect("parses"))
        });
        for chunk in [usize::MAX, 64, 1] {
            let label = if chunk == usize::MAX {
                "one_chunk".to_owned()
            } else {
                format!("{chunk}B_chunks")
            };
            group.bench_function(BenchmarkId::new("HeaderParser", label), |b| {
                b.iter(|| parse_chunked(black_box(bytes), chunk))
            });
        }
        group.finish();
    }
}

fn verify(c: &mut Criterion) {
    let inputs = [
        // The two type-1 items differ only in the RSA-PSS salt length: 32 verifies on the first
        // attempt, 478 (Node-made items) on the second.
        ("1_arweave_salt32", "arweave_salt32.ans104"),
        ("1_arweave_salt478", "arweave_tags_target_anchor.ans104"),
        ("2_ed25519", "ed25519_tags_target_anchor.ans104"),
        ("3_ethereum", "ethereum_tags.ans104"),
        ("4_solana", "solana_hex.ans104"),
    ];
    let mut group = c.benchmark_group("verify");
    for (name, file) in inputs {
        let item = DataItem::parse(&fixture(file)).expect("fixture parses");
        item.verify().expect("fixture verifies");
        group.bench_function(name, |b| {
            b.iter(|| black_box(&item).verify().expect("verifies"))
        });
    }
    group.finish();
}

fn deep_hash(c: &mut Criterion) {
    const CHUNK: usize = 64 * 1024;
    let header = DataItem::parse(&fixture("ed25519_minimal.ans104"))
        .expect("fixture parses")
        .header()
        .clone();
    let mut data = vec![0; 16 << 20];
    DataGenerator::new(1).fill(&mut data);

    let mut group = c.benchmark_group("deep_hash_stream");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for size in [1usize << 20, 16 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(
            BenchmarkId::new("64KiB_chunks", format!("{}MiB", size >> 20)),
            |b| {
                b.iter(|| {
                    let mut hasher = DataItemHasher::new(&header);
                    for chunk in black_box(&data[..size]).chunks(CHUNK) {
                        hasher.update(chunk);
                    }
                    hasher.finalize()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, header_parse, verify, deep_hash);
criterion_main!(benches);
