//! Signature types: their numbers, the lengths of the signature and owner fields, and which of them
//! hb402 can verify.

use crate::Error;

/// The signature type of a DataItem (field 1, a little-endian `u16`).
///
/// Lengths follow arbundles' `SIG_CONFIG`. Types 1–4 can be verified and produced; the others can
/// be parsed (their field lengths are known) but verifying them is refused with
/// [`Error::UnverifiableSignatureType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureType {
    /// 1: Arweave RSA-4096 PSS over SHA-256.
    Arweave,
    /// 2: Ed25519 over the deep-hash.
    Ed25519,
    /// 3: secp256k1 over the EIP-191 prefixed deep-hash.
    Ethereum,
    /// 4: Ed25519 over the lowercase hex text of the deep-hash.
    Solana,
    /// 5: injected Aptos (parsed, not verified).
    InjectedAptos,
    /// 6: multi-signature Aptos (parsed, not verified).
    MultiAptos,
    /// 7: EIP-712 typed Ethereum (parsed, not verified).
    TypedEthereum,
    /// 101: KYVE (parsed, not verified; arbundles registers no verifier either).
    Kyve,
}

impl SignatureType {
    /// Every type this crate can parse.
    pub const ALL: [SignatureType; 8] = [
        SignatureType::Arweave,
        SignatureType::Ed25519,
        SignatureType::Ethereum,
        SignatureType::Solana,
        SignatureType::InjectedAptos,
        SignatureType::MultiAptos,
        SignatureType::TypedEthereum,
        SignatureType::Kyve,
    ];

    /// Maps the wire number to a type.
    pub fn from_u16(value: u16) -> Result<Self, Error> {
        Ok(match value {
            1 => SignatureType::Arweave,
            2 => SignatureType::Ed25519,
            3 => SignatureType::Ethereum,
            4 => SignatureType::Solana,
            5 => SignatureType::InjectedAptos,
            6 => SignatureType::MultiAptos,
            7 => SignatureType::TypedEthereum,
            101 => SignatureType::Kyve,
            other => return Err(Error::UnsupportedSignatureType { sig_type: other }),
        })
    }

    /// The wire number.
    pub fn as_u16(self) -> u16 {
        match self {
            SignatureType::Arweave => 1,
            SignatureType::Ed25519 => 2,
            SignatureType::Ethereum => 3,
            SignatureType::Solana => 4,
            SignatureType::InjectedAptos => 5,
            SignatureType::MultiAptos => 6,
            SignatureType::TypedEthereum => 7,
            SignatureType::Kyve => 101,
        }
    }

    /// Length of the signature field in bytes.
    pub fn signature_len(self) -> usize {
        match self {
            SignatureType::Arweave => 512,
            SignatureType::Ed25519 | SignatureType::Solana | SignatureType::InjectedAptos => 64,
            SignatureType::Ethereum | SignatureType::TypedEthereum | SignatureType::Kyve => 65,
            SignatureType::MultiAptos => 32 * 64 + 4,
        }
    }

    /// Length of the owner field in bytes.
    pub fn owner_len(self) -> usize {
        match self {
            SignatureType::Arweave => 512,
            SignatureType::Ed25519 | SignatureType::Solana | SignatureType::InjectedAptos => 32,
            SignatureType::Ethereum | SignatureType::Kyve => 65,
            SignatureType::TypedEthereum => 42,
            SignatureType::MultiAptos => 32 * 32 + 1,
        }
    }

    /// The name arbundles uses for the type.
    pub fn name(self) -> &'static str {
        match self {
            SignatureType::Arweave => "arweave",
            SignatureType::Ed25519 => "ed25519",
            SignatureType::Ethereum => "ethereum",
            SignatureType::Solana => "solana",
            SignatureType::InjectedAptos => "injectedAptos",
            SignatureType::MultiAptos => "multiAptos",
            SignatureType::TypedEthereum => "typedEthereum",
            SignatureType::Kyve => "kyve",
        }
    }

    /// Whether this crate verifies (and signs) this type.
    pub fn is_verifiable(self) -> bool {
        matches!(
            self,
            SignatureType::Arweave
                | SignatureType::Ed25519
                | SignatureType::Ethereum
                | SignatureType::Solana
        )
    }
}

impl std::fmt::Display for SignatureType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_unknown_types_are_refused() {
        for ty in SignatureType::ALL {
            assert_eq!(SignatureType::from_u16(ty.as_u16()), Ok(ty));
        }
        for bad in [0u16, 8, 100, 102, u16::MAX] {
            assert_eq!(
                SignatureType::from_u16(bad),
                Err(Error::UnsupportedSignatureType { sig_type: bad })
            );
        }
    }

    #[test]
    fn lengths_match_arbundles_sig_config() {
        let expected = [
            (1, 512, 512),
            (2, 64, 32),
            (3, 65, 65),
            (4, 64, 32),
            (5, 64, 32),
            (6, 2052, 1025),
            (7, 65, 42),
            (101, 65, 65),
        ];
        for (n, sig, owner) in expected {
            let ty = SignatureType::from_u16(n).unwrap();
            assert_eq!(
                (ty.signature_len(), ty.owner_len()),
                (sig, owner),
                "type {n}"
            );
        }
    }
}
