//! `hb402-devnode`: runs the development stand-in for a HyperBEAM `~s3@1.0` node until SIGINT
//! or SIGTERM. The first line on stdout is `listening on <address>`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use hb402_devnode::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_DAY_SECONDS, DEFAULT_MAX_BODY_BYTES, Devnode, DevnodeConfig,
    DevnodeError,
};

/// A development stand-in for a HyperBEAM node running Load's ~s3@1.0 device (not a
/// replacement for HyperBEAM).
#[derive(Debug, Parser)]
#[command(name = "hb402-devnode", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8734")]
    listen: SocketAddr,
    /// Directory for buckets, objects and the node key (created when missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// The access key id the ~s3@1.0 routes accept (`Credential=<id>/…` in Authorization).
    #[arg(long, default_value = DEFAULT_ACCESS_KEY_ID)]
    access_key_id: String,
    /// Length of one expiry day in seconds (x-amz-meta-expiry-days).
    #[arg(long, default_value_t = DEFAULT_DAY_SECONDS)]
    day_seconds: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: u64,
}

/// Exit status for an unusable configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let config = DevnodeConfig {
        listen: cli.listen,
        data_dir: cli.data_dir,
        access_key_id: cli.access_key_id,
        day_seconds: cli.day_seconds,
        max_body_bytes: cli.max_body_bytes,
    };
    if let Err(e) = config.validate() {
        eprintln!("hb402-devnode: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hb402-devnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: DevnodeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let node = Devnode::start(config)
            .await
            .context("cannot start the devnode")?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on {}", node.addr())?;
            stdout.flush()?;
        }
        wait_for_signal().await?;
        tracing::info!("stopping");
        node.shutdown()
            .await
            .map_err(|e: DevnodeError| anyhow::anyhow!(e))?;
        Ok(())
    })
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}
