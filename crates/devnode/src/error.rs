//! The typed errors of the devnode library.

use std::path::PathBuf;

/// Why a devnode could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnodeError {
    /// A configuration value is unusable.
    #[error("invalid devnode configuration: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The data directory (buckets, objects, node key) could not be opened or read.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file in the data directory holds something the devnode did not write.
    #[error("data directory {path}: {reason}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
