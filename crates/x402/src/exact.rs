//! Local verification of the EVM `exact` scheme with EIP-3009 `transferWithAuthorization`, before
//! any network call: recipient, exact value, time window and the EIP-712 signature.
//!
//! The checks follow the reference verifier (x402.md §5.4) and add an upper bound on the
//! authorization's lifetime. Signatures longer than 65 bytes (ERC-1271 / ERC-6492 smart wallets)
//! cannot be checked without the chain and are left to the facilitator.

use alloy_primitives::{Address, B256, Signature, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use serde_json::Value;

use crate::offer::{Offer, SCHEME_EXACT};
use crate::types::{ExactEvmPayload, PaymentPayload, V1};

sol! {
    /// The EIP-3009 typed message.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// Seconds of block time an authorization must still be valid for (`validBefore >= now + 6`), as
/// the reference verifier requires.
pub const VALID_BEFORE_BUFFER_SECONDS: u64 = 6;

/// A reason a payment is refused, named as in the x402 specification (§9 of v2, and v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The payload's version is not one hb402 speaks.
    InvalidX402Version,
    /// The scheme is not `exact`.
    InvalidScheme,
    /// The network does not match the offer.
    InvalidNetwork,
    /// The payload is malformed.
    InvalidPayload,
    /// No offer matches what the client accepted.
    InvalidPaymentRequirements,
    /// `to` is not the offer's recipient.
    RecipientMismatch,
    /// `value` is not the offer's amount (v2 name).
    ValueMismatch,
    /// `value` is not the offer's amount (v1 name).
    ValueMismatchV1,
    /// `validAfter` is in the future.
    ValidAfter,
    /// `validBefore` is too soon, or too far in the future.
    ValidBefore,
    /// The signature does not recover to `from`.
    Signature,
    /// The authorization was already used or is being used.
    DuplicateSettlement,
}

impl Reason {
    /// The specification's reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidX402Version => "invalid_x402_version",
            Reason::InvalidScheme => "invalid_scheme",
            Reason::InvalidNetwork => "invalid_network",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidPaymentRequirements => "invalid_payment_requirements",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::ValueMismatchV1 => "invalid_exact_evm_payload_authorization_value",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::Signature => "invalid_exact_evm_payload_signature",
            Reason::DuplicateSettlement => "duplicate_settlement",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused payment: the reason string and a human explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// Specification reason.
    pub reason: Reason,
    /// What exactly was wrong.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// An authorization parsed into chain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Payer.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Amount in atomic units.
    pub value: U256,
    /// Not valid before this unix time.
    pub valid_after: U256,
    /// Not valid at or after this unix time.
    pub valid_before: U256,
    /// Single-use nonce.
    pub nonce: B256,
}

/// How the signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A 65-byte signature that recovers to `from`.
    Recovered,
    /// A smart-wallet signature, left to the facilitator.
    Deferred,
}

/// A payment that passed the local checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocallyVerified {
    /// The authorization.
    pub authorization: Authorization,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
    /// How the signature was checked.
    pub signature_check: SignatureCheck,
}

impl LocallyVerified {
    /// `validBefore` as unix seconds (saturating).
    pub fn valid_before_secs(&self) -> u64 {
        u64::try_from(self.authorization.valid_before).unwrap_or(u64::MAX)
    }
}

fn bad_payload(message: impl Into<String>) -> Refusal {
    Refusal::new(Reason::InvalidPayload, message)
}

fn parse_u256(field: &str, text: &str) -> Result<U256, Refusal> {
    U256::from_str_radix(text, 10)
        .map_err(|_| bad_payload(format!("authorization.{field} is not a decimal integer")))
}

fn parse_hex(field: &str, text: &str) -> Result<Vec<u8>, Refusal> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| bad_payload(format!("{field} is not 0x-prefixed hex")))?;
    alloy_primitives::hex::decode(digits)
        .map_err(|_| bad_payload(format!("{field} is not 0x-prefixed hex")))
}

/// Parses the `exact` EVM payload.
pub fn parse_exact_payload(payload: &Value) -> Result<(Authorization, Vec<u8>), Refusal> {
    let p: ExactEvmPayload = serde_json::from_value(payload.clone())
        .map_err(|e| bad_payload(format!("not an EIP-3009 payload: {e}")))?;
    let a = &p.authorization;
    let address = |field: &str, text: &str| -> Result<Address, Refusal> {
        text.parse()
            .map_err(|_| bad_payload(format!("authorization.{field} is not an address")))
    };
    let nonce = parse_hex("authorization.nonce", &a.nonce)?;
    let nonce: [u8; 32] = nonce
        .try_into()
        .map_err(|_| bad_payload("authorization.nonce is not 32 bytes"))?;
    let auth = Authorization {
        from: address("from", &a.from)?,
        to: address("to", &a.to)?,
        value: parse_u256("value", &a.value)?,
        valid_after: parse_u256("validAfter", &a.valid_after)?,
        valid_before: parse_u256("validBefore", &a.valid_before)?,
        nonce: B256::from(nonce),
    };
    let signature = parse_hex("signature", &p.signature)?;
    Ok((auth, signature))
}

/// The EIP-712 domain of a token.
pub fn domain(
    name: &str,
    version: &str,
    chain_id: u64,
    verifying_contract: Address,
) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.to_owned().into()),
        Some(version.to_owned().into()),
        Some(U256::from(chain_id)),
        Some(verifying_contract),
        None,
    )
}

/// The digest the payer signs (EIP-712: `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct)`).
pub fn signing_hash(auth: &Authorization, domain: &Eip712Domain) -> B256 {
    let message = TransferWithAuthorization {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: auth.valid_after,
        validBefore: auth.valid_before,
        nonce: auth.nonce,
    };
    eip712_digest(domain, message.eip712_hash_struct())
}

/// `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`, with the domain's separator remembered.
pub(crate) fn eip712_digest(domain: &Eip712Domain, struct_hash: B256) -> B256 {
    let mut digest = [0u8; 66];
    digest[..2].copy_from_slice(&[0x19, 0x01]);
    digest[2..34].copy_from_slice(domain_separator(domain).as_slice());
    digest[34..].copy_from_slice(struct_hash.as_slice());
    alloy_primitives::keccak256(digest)
}

/// Domains whose separators are remembered.
const REMEMBERED_DOMAINS: usize = 8;

/// The separator of `domain`, remembered for the last few domains: payments are hashed under
/// the same few domains (one per accepted asset) again and again, and a separator costs three
/// hashes of its own.
fn domain_separator(domain: &Eip712Domain) -> B256 {
    static KNOWN: std::sync::Mutex<Vec<(Eip712Domain, B256)>> = std::sync::Mutex::new(Vec::new());
    let known = || {
        KNOWN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((_, separator)) = known().iter().find(|(d, _)| d == domain) {
        return *separator;
    }
    let separator = domain.separator();
    let mut list = known();
    if list.len() >= REMEMBERED_DOMAINS {
        list.remove(0);
    }
    list.push((domain.clone(), separator));
    separator
}

/// Recovers the signer of a 65-byte `r ‖ s ‖ v` signature. High-S signatures are refused, as the
/// USDC contract refuses them. Recovery is libsecp256k1's (through `secp256k1`): about four
/// times faster than the pure-Rust `k256` the rest of alloy uses, and it is the whole cost of a
/// local payment check (docs/benchmarks.md).
///
/// Recent recoveries are remembered ([`MEMO_SLOTS`] of them): one payment is checked several
/// times on its way (by hb402, then by local settlement's verify and settle), and recovery is a
/// pure function of the hash and the signature, so a remembered answer is the answer.
pub fn recover_signer(hash: &B256, signature: &[u8]) -> Option<Address> {
    let Ok(signature) = <&[u8; 65]>::try_from(signature) else {
        return recover(hash, signature);
    };
    let mut key = [0u8; 97];
    key[..32].copy_from_slice(hash.as_slice());
    key[32..].copy_from_slice(signature);
    let slot = &MEMO[usize::from(u16::from_le_bytes([hash[0], hash[1]])) % MEMO_SLOTS];
    let remembered = *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((k, signer)) = remembered
        && k == key
    {
        return Some(signer);
    }
    let signer = recover(hash, signature)?;
    *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((key, signer));
    Some(signer)
}

/// Slots of the recovery memo: bounded and direct-mapped by the hash; a collision, even a
/// chosen one, only costs a recovery.
pub const MEMO_SLOTS: usize = 1024;

type Remembered = Option<([u8; 97], Address)>;
static MEMO: [std::sync::Mutex<Remembered>; MEMO_SLOTS] =
    [const { std::sync::Mutex::new(None) }; MEMO_SLOTS];

fn recover(hash: &B256, signature: &[u8]) -> Option<Address> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let sig = Signature::from_raw(signature).ok()?;
    if sig.normalize_s().is_some() {
        return None;
    }
    let recovery = RecoveryId::try_from(i32::from(sig.v())).ok()?;
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let key = RecoverableSignature::from_compact(&compact, recovery)
        .ok()?
        .recover(secp256k1::Message::from_digest(hash.0))
        .ok()?;
    Some(Address::from_raw_public_key(
        &key.serialize_uncompressed()[1..],
    ))
}

/// Checks a payment against the offer it matched, at time `now` (unix seconds). `skew_seconds`
/// widens the upper bound on `validBefore` (`now + maxTimeoutSeconds + skew`) for clock skew.
pub fn verify_locally(
    offer: &Offer,
    payment: &PaymentPayload,
    now: u64,
    skew_seconds: u64,
) -> Result<LocallyVerified, Refusal> {
    let (scheme, network_ok) = match payment {
        PaymentPayload::V2(p) => (
            p.accepted.scheme.as_str(),
            p.accepted.network == offer.v2.network,
        ),
        PaymentPayload::V1(p) => (
            p.scheme.as_str(),
            offer.v1.as_ref().is_some_and(|v1| v1.network == p.network),
        ),
    };
    if scheme != SCHEME_EXACT {
        return Err(Refusal::new(
            Reason::InvalidScheme,
            format!("scheme {scheme:?} is not offered"),
        ));
    }
    if !network_ok {
        return Err(Refusal::new(
            Reason::InvalidNetwork,
            "the payment is for another network",
        ));
    }
    let (auth, signature) = parse_exact_payload(payment.payload())?;
    let terms = &offer.terms;
    if auth.to != terms.pay_to {
        return Err(Refusal::new(
            Reason::RecipientMismatch,
            format!(
                "authorization pays {} but the offer's recipient is {}",
                auth.to, terms.pay_to
            ),
        ));
    }
    if auth.value != terms.amount {
        let reason = if payment.version() == V1 {
            Reason::ValueMismatchV1
        } else {
            Reason::ValueMismatch
        };
        return Err(Refusal::new(
            reason,
            format!(
                "authorization value {} is not the price {}",
                auth.value, terms.amount
            ),
        ));
    }
    if auth.valid_after > U256::from(now) {
        return Err(Refusal::new(
            Reason::ValidAfter,
            format!("authorization is not valid before {}", auth.valid_after),
        ));
    }
    if auth.valid_before < U256::from(now.saturating_add(VALID_BEFORE_BUFFER_SECONDS)) {
        return Err(Refusal::new(
            Reason::ValidBefore,
            format!("authorization expired or expires within {VALID_BEFORE_BUFFER_SECONDS} s"),
        ));
    }
    let latest = now
        .saturating_add(terms.max_timeout_seconds)
        .saturating_add(skew_seconds);
    if auth.valid_before > U256::from(latest) {
        return Err(Refusal::new(
            Reason::ValidBefore,
            format!(
                "authorization is valid until {} but at most {} s are accepted",
                auth.valid_before, terms.max_timeout_seconds
            ),
        ));
    }
    let check = match signature.len() {
        65 => {
            let d = domain(
                &terms.asset.eip712_name,
                &terms.asset.eip712_version,
                terms.asset.chain_id,
                terms.asset.address,
            );
            let signer = recover_signer(&signing_hash(&auth, &d), &signature);
            if signer != Some(auth.from) {
                return Err(Refusal::new(
                    Reason::Signature,
                    "the EIP-712 signature does not recover to authorization.from",
                ));
            }
            SignatureCheck::Recovered
        }
        n if n > 65 => SignatureCheck::Deferred,
        n => {
            return Err(Refusal::new(
                Reason::Signature,
                format!("a signature of {n} bytes is neither an EOA nor a smart-wallet signature"),
            ));
        }
    };
    Ok(LocallyVerified {
        authorization: auth,
        signature,
        signature_check: check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The libsecp256k1 recovery agrees with alloy's pure-Rust one on signatures made with
    /// `k256`, both parities, and refuses what alloy refuses.
    #[test]
    fn recovery_matches_the_reference_implementation() {
        use alloy_primitives::keccak256;
        for n in 1u8..=64 {
            let key = k256::ecdsa::SigningKey::from_slice(&keccak256([n]).0).unwrap();
            let hash = keccak256([n, 0xaa]);
            let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).unwrap();
            let sig = sig.normalize_s().unwrap_or(sig);
            let recid = k256::ecdsa::RecoveryId::from_byte(recid.to_byte() & 1).unwrap();
            let mut raw = sig.to_bytes().to_vec();
            raw.push(27 + recid.to_byte());
            let expected = Signature::from_raw(&raw)
                .unwrap()
                .recover_address_from_prehash(&hash)
                .unwrap();
            assert_eq!(recover_signer(&hash, &raw), Some(expected), "{n}");
            assert_eq!(
                expected,
                Address::from_private_key(&key),
                "the signer itself"
            );
            // The other parity is another key (or none).
            raw[64] ^= 1;
            assert_ne!(recover_signer(&hash, &raw), Some(expected));
            // Asked again (remembered or recovered anew), the same answers.
            assert_ne!(recover_signer(&hash, &raw), Some(expected));
            raw[64] ^= 1;
            assert_eq!(recover_signer(&hash, &raw), Some(expected), "{n}");
        }
        let hash = keccak256([1]);
        assert_eq!(recover_signer(&hash, &[0u8; 65]), None);
        assert_eq!(recover_signer(&hash, &[0u8; 64]), None);
        let mut high_s = [0x11u8; 65];
        high_s[32..64].copy_from_slice(&[0xff; 32]);
        high_s[64] = 27;
        assert_eq!(recover_signer(&hash, &high_s), None);
    }

    fn vector_auth() -> Authorization {
        Authorization {
            from: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
            to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            value: U256::from(10_000),
            valid_after: U256::from(1_700_000_000u64),
            valid_before: U256::from(1_700_000_060u64),
            nonce: "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                .parse()
                .unwrap(),
        }
    }

    /// The vectors of x402.md §5.3, for both domains.
    #[test]
    fn reference_signature_vectors() {
        let auth = vector_auth();
        let message = TransferWithAuthorization {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: auth.valid_after,
            validBefore: auth.valid_before,
            nonce: auth.nonce,
        };
        assert_eq!(
            message.eip712_hash_struct().to_string(),
            "0xf955160ad4f326aec31580556a01619794b835d64bc7a44ca557ef966e795647"
        );
        let rows = [
            (
                "USDC",
                84_532u64,
                "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818",
                "0xb254e2449b57a383ea9225a082146cfd83e7101a71b2f644f64e90c6d0cda6b4",
                "0x67a8ff708114f7778798465352e4be296c64180ef40a5df7cdd2a042ebdb99601186f300f979c36979115a47e5677d2c769b51c018115a563da4e31993c6de3c1b",
            ),
            (
                "USD Coin",
                8453,
                "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                "0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f",
                "0xb5585cff407d9b45fca9f63f109b66a2c069cf32e069cc2b9eb1e02bae30e0ea",
                "0xd13ae929c076a80769cd131e3a82b8f94765e103d7584a8d046ea66eeb2c274d7642030540f3a8f171ac2c99a1fac46b8182cc6a63b8d684cdd0b1c4a7d8dfd31b",
            ),
        ];
        for (name, chain, contract, separator, digest, signature) in rows {
            let d = domain(name, "2", chain, contract.parse().unwrap());
            assert_eq!(d.separator().to_string(), separator, "{name}");
            let hash = signing_hash(&auth, &d);
            assert_eq!(hash.to_string(), digest, "{name}");
            let sig = alloy_primitives::hex::decode(&signature[2..]).unwrap();
            assert_eq!(recover_signer(&hash, &sig), Some(auth.from), "{name}");
        }
    }

    #[test]
    fn reason_strings_are_the_specifications() {
        assert_eq!(
            Reason::ValueMismatch.as_str(),
            "invalid_exact_evm_payload_authorization_value_mismatch"
        );
        assert_eq!(
            Reason::ValueMismatchV1.as_str(),
            "invalid_exact_evm_payload_authorization_value"
        );
        assert_eq!(
            Reason::Signature.as_str(),
            "invalid_exact_evm_payload_signature"
        );
    }
}
