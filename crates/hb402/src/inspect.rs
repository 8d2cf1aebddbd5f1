//! `hb402 inspect`: one DataItem as JSON, verified while it streams.

use std::io::{Read, Write as _};
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hb402_ans104::{DataItemHasher, Error, Header, HeaderParser, verify_signature};
use serde_json::{Value, json};

const CHUNK: usize = 64 * 1024;

/// Why an item could not be inspected.
enum Failure {
    Io(std::io::Error),
    Item(Error),
}

pub(crate) fn run(file: &str, max_header_bytes: usize) -> ExitCode {
    let input: Result<Box<dyn Read>, std::io::Error> = if file == "-" {
        Ok(Box::new(std::io::stdin().lock()))
    } else {
        std::fs::File::open(file).map(|f| Box::new(f) as Box<dyn Read>)
    };
    let result = input
        .map_err(Failure::Io)
        .and_then(|r| inspect(r, max_header_bytes));
    let (value, code) = match result {
        Ok((value, true)) => (value, ExitCode::SUCCESS),
        Ok((value, false)) => (value, ExitCode::from(2)),
        Err(Failure::Io(e)) => (
            json!({"error": "io_error", "message": format!("{file}: {e}")}),
            ExitCode::from(1),
        ),
        Err(Failure::Item(e)) => (
            json!({"error": e.code(), "message": e.to_string()}),
            ExitCode::from(1),
        ),
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout leaves nothing to report to.
    let _ = writeln!(out, "{value}");
    code
}

/// Reads the item: header through the incremental parser, data through the streaming hasher.
fn inspect(mut input: impl Read, max_header_bytes: usize) -> Result<(Value, bool), Failure> {
    let mut parser = HeaderParser::new(max_header_bytes);
    let mut buf = vec![0u8; CHUNK];
    let (header, mut hasher) = loop {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            return Err(Failure::Item(parser.truncated()));
        }
        if let Some(parsed) = parser.push(&buf[..n]).map_err(Failure::Item)? {
            let mut hasher = DataItemHasher::new(&parsed.header);
            hasher.update(&buf[parsed.consumed..n]);
            break (parsed.header, hasher);
        }
    };
    loop {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let data_size = hasher.data_len();
    let verdict = verify_signature(&header, &hasher.finalize());
    let mut value = describe(&header, data_size);
    value["valid"] = json!(verdict.is_ok());
    if let Err(e) = &verdict {
        value["invalid_reason"] = json!({"error": e.code(), "message": e.to_string()});
    }
    Ok((value, verdict.is_ok()))
}

fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, Failure> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map_err(Failure::Io),
        }
    }
}

fn describe(header: &Header, data_size: u64) -> Value {
    let tags: Vec<Value> = header
        .tags()
        .iter()
        .map(|t| json!({"name": t.name_str(), "value": t.value_str()}))
        .collect();
    json!({
        "id": header.id().to_string(),
        "signature_type": header.signature_type().as_u16(),
        "owner": URL_SAFE_NO_PAD.encode(header.owner()),
        "owner_address": header.owner_address(),
        "target": header.target().map(|t| URL_SAFE_NO_PAD.encode(t)),
        "anchor": header.anchor().map(|a| URL_SAFE_NO_PAD.encode(a)),
        "tags": tags,
        "data_offset": header.data_offset(),
        "data_size": data_size,
        "portable": header.is_portable(),
    })
}
