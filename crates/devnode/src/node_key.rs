//! The node's identity: a random 32-byte key kept in the data directory, so the address
//! `GET /~meta@1.0/info/address` reports is stable across restarts.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::DevnodeError;

const FILE_NAME: &str = "node-key";

/// The node's key material and the values derived from it.
#[derive(Clone)]
pub(crate) struct NodeKey {
    /// 43 characters: base64url of SHA-256 of the node's Ed25519 public key, the same shape as
    /// an Arweave address.
    pub(crate) address: String,
    /// The key that signs and checks this node's presigned URLs.
    pub(crate) presign_secret: [u8; 32],
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Reads `<data_dir>/node-key`, creating it with a fresh random key when missing.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<NodeKey, DevnodeError> {
        let path = data_dir.join(FILE_NAME);
        let io_err = |source| DevnodeError::DataDir {
            path: path.clone(),
            source,
        };
        let seed = match fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| DevnodeError::Corrupt {
                    path: path.clone(),
                    reason: format!("not a hex key: {e}"),
                })?;
                <[u8; 32]>::try_from(bytes).map_err(|_| DevnodeError::Corrupt {
                    path: path.clone(),
                    reason: "the node key must be 32 bytes".into(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(io_err)?;
                writeln!(file, "{}", hex::encode(seed)).map_err(io_err)?;
                seed
            }
            Err(e) => return Err(io_err(e)),
        };
        Ok(NodeKey::from_seed(&seed))
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> NodeKey {
        let public_key = hb402_ans104::SigningKey::ed25519_from_seed(seed).owner();
        let address = URL_SAFE_NO_PAD.encode(Sha256::digest(&public_key));
        let mut hasher = Sha256::new();
        hasher.update(b"hb402-devnode presigned urls\0");
        hasher.update(seed);
        NodeKey {
            address,
            presign_secret: hasher.finalize().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKey::load_or_create(dir.path()).unwrap();
        let second = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.address, second.address);
        assert_eq!(first.address.len(), 43);
        assert_eq!(first.presign_secret, second.presign_secret);
        assert!(!format!("{first:?}").contains("presign_secret"));
    }

    #[test]
    fn rejects_a_corrupt_key_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "zz").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(DevnodeError::Corrupt { .. })
        ));
    }
}
