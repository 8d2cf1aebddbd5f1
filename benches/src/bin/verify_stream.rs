//! Verifies one DataItem read from stdin in 64 KiB chunks, holding only the header and a hasher,
//! and prints one JSON line: id, validity, data size and total size. Exits 1 if it is invalid.

use std::io::{self, Read as _};
use std::process::ExitCode;

use hb402_ans104::{DEFAULT_MAX_HEADER_BYTES, StreamingVerifier};
use serde_json::json;

const CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    let mut verifier = StreamingVerifier::new(DEFAULT_MAX_HEADER_BYTES);
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("verify-stream: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = verifier.push(&buf[..n]) {
            println!("{}", json!({ "valid": false, "error": e.to_string() }));
            return ExitCode::FAILURE;
        }
    }
    let id = verifier.header().map(|h| h.id().to_string());
    let size = verifier.bytes_seen();
    match verifier.finish() {
        Ok(item) => {
            let line = json!({
                "id": item.id.to_string(),
                "valid": true,
                "data_size": item.data_size,
                "size": item.size,
            });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let line = json!({ "id": id, "valid": false, "size": size, "error": e.to_string() });
            println!("{line}");
            ExitCode::FAILURE
        }
    }
}
