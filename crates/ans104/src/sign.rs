//! Signing keys for types 1–4, for tests, tools and the development node.

use k256::ecdsa::signature::hazmat::PrehashSigner as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256};

use crate::verify::{eip191_digest, hex_lower};
use crate::{DeepHash, Error, SignatureType};

/// A private key that can sign DataItems.
#[derive(Clone)]
#[non_exhaustive]
pub enum SigningKey {
    /// Type 1: an RSA-4096 key; signs RSA-PSS/SHA-256 with a 32-byte salt (as HyperBEAM does).
    Arweave(Box<rsa::RsaPrivateKey>),
    /// Type 2: Ed25519 over the deep-hash.
    Ed25519(ed25519_dalek::SigningKey),
    /// Type 3: secp256k1, EIP-191 `personal_sign` of the deep-hash.
    Ethereum(k256::ecdsa::SigningKey),
    /// Type 4: Ed25519 over the lowercase hex text of the deep-hash.
    Solana(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_tuple("SigningKey")
            .field(&self.signature_type())
            .finish()
    }
}

impl SigningKey {
    /// An Arweave key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); it must be 4096 bits with
    /// exponent 65537.
    pub fn arweave_from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| Error::InvalidKey {
            reason: format!("not a PKCS#8 RSA private key: {e}"),
        })?;
        if key.size() != 512 || key.e() != &rsa::BigUint::from(65_537u32) {
            return Err(Error::InvalidKey {
                reason: "an Arweave key is RSA-4096 with exponent 65537".into(),
            });
        }
        Ok(SigningKey::Arweave(Box::new(key)))
    }

    /// A fresh random Arweave key (slow: generating a 4096-bit RSA key takes seconds).
    pub fn generate_arweave() -> Result<Self, Error> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 4096).map_err(|e| {
            Error::InvalidKey {
                reason: e.to_string(),
            }
        })?;
        Ok(SigningKey::Arweave(Box::new(key)))
    }

    /// An Ed25519 key (type 2) from its 32-byte seed.
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// A Solana key (type 4, hex-message signing) from its 32-byte Ed25519 seed.
    pub fn solana_from_seed(seed: &[u8; 32]) -> Self {
        SigningKey::Solana(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// An Ethereum key (type 3) from its 32-byte secret.
    pub fn ethereum_from_bytes(secret: &[u8; 32]) -> Result<Self, Error> {
        k256::ecdsa::SigningKey::from_slice(secret)
            .map(SigningKey::Ethereum)
            .map_err(|_| Error::InvalidKey {
                reason: "not a valid secp256k1 secret".into(),
            })
    }

    /// The signature type this key produces.
    pub fn signature_type(&self) -> SignatureType {
        match self {
            SigningKey::Arweave(_) => SignatureType::Arweave,
            SigningKey::Ed25519(_) => SignatureType::Ed25519,
            SigningKey::Ethereum(_) => SignatureType::Ethereum,
            SigningKey::Solana(_) => SignatureType::Solana,
        }
    }

    /// The owner field for this key.
    pub fn owner(&self) -> Vec<u8> {
        match self {
            SigningKey::Arweave(key) => {
                let mut n = key.n().to_bytes_be();
                // Left-pad to the full 512 bytes.
                while n.len() < 512 {
                    n.insert(0, 0);
                }
                n
            }
            SigningKey::Ed25519(key) | SigningKey::Solana(key) => {
                key.verifying_key().to_bytes().to_vec()
            }
            SigningKey::Ethereum(key) => key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// Signs a DataItem's deep-hash.
    pub fn sign(&self, message: &DeepHash) -> Result<Vec<u8>, Error> {
        use ed25519_dalek::Signer as _;
        match self {
            SigningKey::Arweave(key) => {
                let hashed = Sha256::digest(message);
                key.sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new_with_salt::<Sha256>(32),
                    &hashed,
                )
                .map_err(|e| Error::InvalidKey {
                    reason: e.to_string(),
                })
            }
            SigningKey::Ed25519(key) => Ok(key.sign(message).to_bytes().to_vec()),
            SigningKey::Solana(key) => {
                Ok(key.sign(hex_lower(message).as_bytes()).to_bytes().to_vec())
            }
            SigningKey::Ethereum(key) => {
                let digest = eip191_digest(message);
                let (sig, recid): (k256::ecdsa::Signature, k256::ecdsa::RecoveryId) =
                    key.sign_prehash(&digest).map_err(|e| Error::InvalidKey {
                        reason: e.to_string(),
                    })?;
                let mut out = sig.to_bytes().to_vec();
                out.push(27 + recid.to_byte());
                Ok(out)
            }
        }
    }
}
