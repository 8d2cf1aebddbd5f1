//! Writes a signed type-2 (Ed25519) DataItem with `BYTES` bytes of deterministic data to stdout,
//! in constant memory: the data is generated once to hash and sign, then again to emit.
//!
//! ```text
//! gen-item BYTES [SEED]
//! ```
//!
//! The id goes to stderr, so a verifier's output can be checked against it.

use std::io::{self, Write as _};
use std::process::ExitCode;

use hb402_ans104::{DataItemHasher, Header, SignatureType, SigningKey, Tag};
use hb402_benches::DataGenerator;

const CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [bytes] => bytes.parse().ok().map(|b| (b, 0)),
        [bytes, seed] => bytes.parse().ok().zip(seed.parse().ok()),
        _ => None,
    };
    let Some((size, seed)) = parsed else {
        eprintln!("usage: gen-item BYTES [SEED]");
        return ExitCode::from(64);
    };
    match run(size, seed) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (e.g. `| head`): not an error of ours.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-item: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Feeds `size` bytes of the generator to `sink`, a chunk at a time.
fn for_each_chunk(
    size: u64,
    seed: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut generator = DataGenerator::new(seed);
    let mut buf = vec![0; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        generator.fill(&mut buf[..n]);
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn run(size: u64, seed: u64) -> io::Result<()> {
    let key = SigningKey::ed25519_from_seed(&[0x42; 32]);
    let tags = vec![
        Tag::new("Content-Type", "application/octet-stream"),
        Tag::new("App-Name", "hb402-gen-item"),
    ];
    let mut header = Header::new_unsigned(SignatureType::Ed25519, key.owner(), None, None, tags)
        .map_err(io::Error::other)?;

    let mut hasher = DataItemHasher::new(&header);
    for_each_chunk(size, seed, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    let signature = key.sign(&hasher.finalize()).map_err(io::Error::other)?;
    header.set_signature(signature).map_err(io::Error::other)?;
    eprintln!("{}", header.id());

    let mut out = io::stdout().lock();
    out.write_all(&header.to_bytes())?;
    for_each_chunk(size, seed, |chunk| out.write_all(chunk))?;
    out.flush()
}
