//! The `hb402` command: the sidecar and its tools. A thin main: parse the command line, set up
//! logging, load and validate the configuration, build, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: measured in `benches/compare.sh` (see
/// docs/benchmarks.md), it lowers the CPU per proxied request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod inspect;
mod sign_item;

/// hb402: x402 payments, expiry and private share links for HyperBEAM ~s3@1.0 DataItems.
///
/// `hb402 --config FILE` runs the sidecar; `hb402 --config FILE --validate` only checks the
/// configuration (exit 0 when valid, 64 when not). Command-line values win over the
/// environment (`HB402_LISTEN`, `HB402_ADMIN_LISTEN`, `HB402_UPSTREAM`, `HB402_STATE_DIR`),
/// which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "hb402", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Check the configuration and exit (0 valid, 64 invalid).
    #[arg(long)]
    validate: bool,
    /// The public listener address (overrides `listen.public`).
    #[arg(long)]
    listen: Option<String>,
    /// The admin listener address (overrides `listen.admin`).
    #[arg(long)]
    admin_listen: Option<String>,
    /// The node's base URL (overrides `upstream.url`).
    #[arg(long)]
    upstream: Option<String>,
    /// The state directory (overrides `store.state_dir`).
    #[arg(long)]
    state_dir: Option<String>,
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
    /// GET a URL like curl, paying an x402 402 with USDC: the cheapest offer within
    /// --max-amount is signed (EIP-3009) with the key in --private-key-env and the request is
    /// retried once. The body goes to standard output (or -o FILE); the payment, its settlement
    /// transaction and any receipt go to standard error. Exit 0 for a 2xx answer, else 1.
    Fetch(client::FetchArgs),
    /// POST a signed DataItem file to an upload URL (e.g. http://127.0.0.1:8402/upload), paying
    /// for it as `fetch` does when uploads are priced. Prints the JSON answer.
    Upload(client::UploadArgs),
    /// Make a signed ANS-104 DataItem from a data file, tags and a key from the environment
    /// (Ethereum or Ed25519). The item goes to standard output (or -o FILE); its id, size and
    /// owner address to standard error as JSON.
    SignItem(sign_item::SignItemArgs),
}

/// Exit status for an invalid configuration (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Inspect {
            file,
            max_header_bytes,
        }) => inspect::run(&file, max_header_bytes),
        Some(Command::Fetch(args)) => client::fetch(args),
        Some(Command::Upload(args)) => client::upload(args),
        Some(Command::SignItem(args)) => sign_item::run(args),
        None => serve(cli.run),
    }
}

fn serve(args: RunArgs) -> ExitCode {
    let Some(path) = args.config else {
        eprintln!("hb402: --config FILE is required (see hb402 --help)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let overrides = hb402_gate::config::Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        upstream: args.upstream,
        state_dir: args.state_dir,
    };
    let config =
        match hb402_gate::config::Config::load(&path, &overrides, &|k| std::env::var(k).ok()) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("hb402: invalid configuration: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    if args.validate {
        println!("{}: configuration is valid", path.display());
        return ExitCode::SUCCESS;
    }
    init_logging(config.server.log_format);
    tracing::info!(
        public = %config.listen.public,
        admin = %config.listen.admin,
        upstream = %config.upstream.url,
        version = env!("CARGO_PKG_VERSION"),
        "hb402 starting"
    );
    match hb402_gate::build(config) {
        Ok(built) => {
            // Handles SIGINT (fast), SIGTERM (graceful) and SIGQUIT (upgrade); exits the process.
            built.server.run_forever()
        }
        Err(e) => {
            tracing::error!(error = %e, "hb402 could not start");
            eprintln!("hb402: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: hb402_gate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        hb402_gate::config::LogFormat::Json => builder.json().init(),
        hb402_gate::config::LogFormat::Text => builder.init(),
    }
}
