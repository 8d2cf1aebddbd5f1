//! The devnode's configuration: what to bind, where to keep data, which access key id the
//! emulated `~s3@1.0` device accepts, and how long a "day" lasts for object expiry.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use crate::DevnodeError;

/// The port a HyperBEAM node listens on by default.
pub const DEFAULT_PORT: u16 = 8734;

/// The access key id the devnode accepts when none is configured. Like the real device, only the
/// id is compared; the secret and the SigV4 signature are never checked.
pub const DEFAULT_ACCESS_KEY_ID: &str = "hb402-dev";

/// One day, in seconds: the unit of `x-amz-meta-expiry-days`.
pub const DEFAULT_DAY_SECONDS: u64 = 86_400;

/// The largest request body read by default (256 MiB). Larger bodies get `413`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// How a devnode is started. Build one with [`DevnodeConfig::new`] and adjust the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnodeConfig {
    /// Where to listen. Port 0 picks a free port; [`crate::DevnodeHandle::addr`] reports it.
    pub listen: SocketAddr,
    /// The directory holding buckets, objects and the node key. Created when missing; data
    /// survives a restart on the same directory.
    pub data_dir: PathBuf,
    /// The access key id the `~s3@1.0` routes require in `Authorization` (`Credential=<id>/…`).
    pub access_key_id: String,
    /// The length of one expiry "day" in seconds, so tests can run expiry in seconds.
    pub day_seconds: u64,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: u64,
}

impl DevnodeConfig {
    /// A configuration with the defaults: `127.0.0.1:8734`, access key id
    /// [`DEFAULT_ACCESS_KEY_ID`], a day of 86 400 seconds, bodies up to 256 MiB.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DevnodeConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            data_dir: data_dir.into(),
            access_key_id: DEFAULT_ACCESS_KEY_ID.to_owned(),
            day_seconds: DEFAULT_DAY_SECONDS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Checks the values that would make the node unusable.
    pub fn validate(&self) -> Result<(), DevnodeError> {
        let invalid = |reason: &str| Err(DevnodeError::InvalidConfig(reason.to_owned()));
        if self.access_key_id.is_empty() {
            return invalid("access_key_id must not be empty");
        }
        // The device cuts the id at the first `/` after `Credential=`, so an id containing `/`
        // (or characters that cannot appear in a header) could never match.
        if self
            .access_key_id
            .bytes()
            .any(|b| b == b'/' || b == b',' || !b.is_ascii_graphic())
        {
            return invalid("access_key_id must be printable ASCII without '/', ',' or spaces");
        }
        if self.day_seconds == 0 {
            return invalid("day_seconds must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes must be at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let config = DevnodeConfig::new("data");
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.access_key_id, DEFAULT_ACCESS_KEY_ID);
        config.validate().unwrap();
    }

    #[test]
    fn rejects_unusable_values() {
        let mut config = DevnodeConfig::new("data");
        config.access_key_id = "a/b".into();
        assert!(config.validate().is_err());
        config.access_key_id = String::new();
        assert!(config.validate().is_err());
        let mut config = DevnodeConfig::new("data");
        config.day_seconds = 0;
        assert!(config.validate().is_err());
        let mut config = DevnodeConfig::new("data");
        config.max_body_bytes = 0;
        assert!(config.validate().is_err());
    }
}
