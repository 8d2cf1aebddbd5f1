//! The `hb402` command: the sidecar and its tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod inspect;

/// hb402: x402 payments, expiry and private share links for HyperBEAM ~s3@1.0 DataItems.
#[derive(Debug, Parser)]
#[command(name = "hb402", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an ANS-104 DataItem as one JSON object and verify its signature, streaming (items
    /// of any size are read in constant memory).
    ///
    /// Exit status: 0 when the item is valid, 2 when it parses but does not verify (the object is
    /// printed with "valid": false), 1 when it cannot be read or parsed (a JSON object
    /// {"error", "message"} is printed).
    Inspect {
        /// The item file, or `-` for standard input.
        file: String,
        /// Refuse headers larger than this many bytes.
        #[arg(long, default_value_t = hb402_ans104::DEFAULT_MAX_HEADER_BYTES)]
        max_header_bytes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect {
            file,
            max_header_bytes,
        } => inspect::run(&file, max_header_bytes),
    }
}
