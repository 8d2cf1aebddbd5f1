//! Signature verification for types 1–4 over a DataItem's deep-hash.

use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256};

use crate::{DeepHash, Error, Header, SignatureType};

/// RSA-PSS salt lengths accepted for type 1, in the order tried: 32 (HyperBEAM, arweave-js
/// WebCrypto, most libraries), 478 (the maximum for a 4096-bit key: arweave-js in Node, and so
/// arbundles in Node) and 0 (accepted by arweave-js' WebCrypto verifier).
pub const ARWEAVE_SALT_LENGTHS: [usize; 3] = [32, 478, 0];

/// The EIP-191 `personal_sign` prefix for a 48-byte message.
pub(crate) const EIP191_PREFIX_48: &[u8] = b"\x19Ethereum Signed Message:\n48";

/// Verifies `header`'s signature over `message` (the item's deep-hash).
pub fn verify_signature(header: &Header, message: &DeepHash) -> Result<(), Error> {
    let sig = header.signature();
    let owner = header.owner();
    let owner_offset = 2 + sig.len() as u64;
    match header.signature_type() {
        SignatureType::Arweave => verify_arweave(owner, sig, message, owner_offset),
        SignatureType::Ed25519 => verify_ed25519(owner, sig, message, owner_offset),
        SignatureType::Solana => {
            // Wallets sign the lowercase hex text of the deep-hash (arbundles
            // HexInjectedSolanaSigner, HyperBEAM ar_wallet), not the raw 48 bytes.
            verify_ed25519(owner, sig, hex_lower(message).as_bytes(), owner_offset)
        }
        SignatureType::Ethereum => verify_ethereum(owner, sig, message, owner_offset),
        other => Err(Error::UnverifiableSignatureType {
            sig_type: other.as_u16(),
            name: other.name(),
        }),
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn verify_arweave(
    owner: &[u8],
    sig: &[u8],
    message: &[u8],
    owner_offset: u64,
) -> Result<(), Error> {
    let n = rsa::BigUint::from_bytes_be(owner);
    let key = rsa::RsaPublicKey::new(n, rsa::BigUint::from(65_537u32)).map_err(|_| {
        Error::InvalidOwner {
            offset: owner_offset,
            reason: "not an RSA modulus hb402 accepts",
        }
    })?;
    if key.size() != sig.len() {
        return Err(Error::InvalidOwner {
            offset: owner_offset,
            reason: "RSA modulus is not 4096 bits",
        });
    }
    let hashed = Sha256::digest(message);
    for salt_len in ARWEAVE_SALT_LENGTHS {
        if key
            .verify(rsa::Pss::new_with_salt::<Sha256>(salt_len), &hashed, sig)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(Error::InvalidSignature)
}

fn verify_ed25519(
    owner: &[u8],
    sig: &[u8],
    message: &[u8],
    owner_offset: u64,
) -> Result<(), Error> {
    let key_bytes: &[u8; 32] = owner.try_into().map_err(|_| Error::InvalidOwner {
        offset: owner_offset,
        reason: "an Ed25519 key is 32 bytes",
    })?;
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(key_bytes).map_err(|_| Error::InvalidOwner {
            offset: owner_offset,
            reason: "not an Ed25519 public key",
        })?;
    let sig_bytes: &[u8; 64] = sig.try_into().map_err(|_| Error::MalformedSignature {
        reason: "an Ed25519 signature is 64 bytes",
    })?;
    // Strict verification refuses small-order keys and non-canonical encodings, with which one
    // signature could verify for several messages, so that two different items would share an
    // id. Honest signers (arbundles, HyperBEAM) are unaffected.
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig_bytes))
        .map_err(|_| Error::InvalidSignature)
}

fn verify_ethereum(
    owner: &[u8],
    sig: &[u8],
    message: &[u8],
    owner_offset: u64,
) -> Result<(), Error> {
    if owner.len() != 65 || owner[0] != 0x04 {
        return Err(Error::InvalidOwner {
            offset: owner_offset,
            reason: "an Ethereum owner is a 65-byte uncompressed secp256k1 key",
        });
    }
    let key =
        k256::ecdsa::VerifyingKey::from_sec1_bytes(owner).map_err(|_| Error::InvalidOwner {
            offset: owner_offset,
            reason: "not a secp256k1 public key",
        })?;
    if sig.len() != 65 {
        return Err(Error::MalformedSignature {
            reason: "an Ethereum signature is 65 bytes",
        });
    }
    if !matches!(sig[64], 27 | 28) {
        return Err(Error::MalformedSignature {
            reason: "recovery byte v must be 27 or 28",
        });
    }
    let signature =
        k256::ecdsa::Signature::from_slice(&sig[..64]).map_err(|_| Error::MalformedSignature {
            reason: "r or s is out of range",
        })?;
    // libsecp256k1 (used by arbundles) refuses high-S signatures; so does hb402.
    if signature.normalize_s().is_some() {
        return Err(Error::MalformedSignature {
            reason: "high-S signature",
        });
    }
    let digest = eip191_digest(message);
    // The recovery byte is part of the signature, and so of the item's id: it must be the one
    // that recovers the owner. Verifying (r, s) alone would accept the flipped byte too, giving
    // the same content a second id.
    let recovery =
        k256::ecdsa::RecoveryId::from_byte(sig[64] - 27).ok_or(Error::MalformedSignature {
            reason: "recovery byte v must be 27 or 28",
        })?;
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &signature, recovery)
        .map_err(|_| Error::InvalidSignature)?;
    if recovered != key {
        return Err(Error::InvalidSignature);
    }
    Ok(())
}

pub(crate) fn eip191_digest(message: &[u8]) -> [u8; 32] {
    let mut prefixed = Vec::with_capacity(EIP191_PREFIX_48.len() + message.len());
    prefixed.extend_from_slice(EIP191_PREFIX_48);
    prefixed.extend_from_slice(message);
    alloy_primitives::keccak256(&prefixed).0
}
