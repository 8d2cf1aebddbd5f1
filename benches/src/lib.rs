//! Shared pieces of the hb402 benchmarks and measurement tools.
//!
//! The benchmarks themselves live in the bench targets of this package (`benches/ans104.rs`); the
//! binaries `gen-item` and `verify-stream` measure streaming verification of items too large to
//! hold in memory.

use std::path::PathBuf;

/// A deterministic byte stream (xorshift64*), so a large DataItem's data can be produced twice,
/// once to sign and once to emit, without ever being held in memory.
#[derive(Debug, Clone)]
pub struct DataGenerator {
    state: u64,
}

impl DataGenerator {
    /// A generator; the same seed always yields the same bytes.
    pub fn new(seed: u64) -> Self {
        // xorshift must not start from zero; the odd bit guarantees it.
        DataGenerator {
            state: (seed ^ 0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The directory of the committed arbundles DataItem fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/ans104/tests/vectors/fixtures")
}

/// Reads one committed fixture by file name.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_chunking_independent() {
        let mut whole = vec![0; 1000];
        DataGenerator::new(7).fill(&mut whole);
        // Chunks that are multiples of 8 bytes continue the same stream.
        let mut pieces = vec![0; 1000];
        let mut g = DataGenerator::new(7);
        let (a, b) = pieces.split_at_mut(64);
        g.fill(a);
        g.fill(b);
        assert_eq!(whole, pieces);
        let mut other = vec![0; 1000];
        DataGenerator::new(8).fill(&mut other);
        assert_ne!(whole, other);
    }
}
