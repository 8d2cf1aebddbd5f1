//! The EVM `batch-settlement` scheme's wire types and EIP-712 digests (x402
//! `specs/schemes/batch-settlement/scheme_batch_settlement_evm.md`): a payer deposits once into an
//! escrow channel of the `x402BatchSettlement` contract and signs a cumulative voucher per
//! request; the receiver claims many vouchers in one transaction and sweeps them with `settle`.
//!
//! Pure: identities and digests are computed here, the channel state they are checked against
//! is the caller's.

use alloy_primitives::{Address, B256, U256, address, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, SolValue, sol};
use serde::{Deserialize, Serialize};

/// The scheme's name in offers and payloads.
pub const SCHEME_BATCH: &str = "batch-settlement";

/// `x402BatchSettlement`'s canonical address (the same on every chain).
pub const BATCH_SETTLEMENT: Address = address!("0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");

/// The deposit collector for tokens with ERC-3009 `receiveWithAuthorization` (USDC).
pub const ERC3009_DEPOSIT_COLLECTOR: Address =
    address!("0x4020806089470a89826cB9fB1f4059150b550004");

/// The contract's bounds on `withdrawDelay`, in seconds (15 minutes to 30 days).
pub const WITHDRAW_DELAY_SECONDS: std::ops::RangeInclusive<u64> = 900..=2_592_000;

sol! {
    /// A channel's immutable configuration; its EIP-712 digest is the channel id.
    #[derive(Debug, PartialEq, Eq)]
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// A cumulative ceiling the payer (or its authorizer) signs.
    #[derive(Debug)]
    struct Voucher {
        bytes32 channelId;
        uint128 maxClaimableAmount;
    }

    /// A cooperative refund the receiver authorizer signs.
    #[derive(Debug)]
    struct Refund {
        bytes32 channelId;
        uint256 nonce;
        uint128 amount;
    }

    /// One row of a claim batch.
    #[derive(Debug)]
    struct ClaimEntry {
        bytes32 channelId;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
    }

    /// The batch of claims the receiver authorizer signs for `claimWithSignature`.
    #[derive(Debug)]
    struct ClaimBatch {
        ClaimEntry[] claims;
    }
}

/// The contract's EIP-712 domain on `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some("x402 Batch Settlement".into()),
        Some("1".into()),
        Some(U256::from(chain_id)),
        Some(BATCH_SETTLEMENT),
        None,
    )
}

fn digest(chain_id: u64, struct_hash: B256) -> B256 {
    let mut bytes = [0u8; 66];
    bytes[..2].copy_from_slice(&[0x19, 0x01]);
    bytes[2..34].copy_from_slice(domain(chain_id).separator().as_slice());
    bytes[34..].copy_from_slice(struct_hash.as_slice());
    keccak256(bytes)
}

/// The channel id: the EIP-712 digest of the configuration under the contract's domain, so the
/// same configuration names different channels on different chains.
pub fn channel_id(config: &ChannelConfig, chain_id: u64) -> B256 {
    digest(chain_id, config.eip712_hash_struct())
}

/// The digest a voucher's signer signs.
pub fn voucher_digest(channel: B256, max_claimable: u128, chain_id: u64) -> B256 {
    let voucher = Voucher {
        channelId: channel,
        maxClaimableAmount: max_claimable,
    };
    digest(chain_id, voucher.eip712_hash_struct())
}

/// The digest the receiver authorizer signs for `refundWithSignature`.
pub fn refund_digest(channel: B256, nonce: U256, amount: u128, chain_id: u64) -> B256 {
    let refund = Refund {
        channelId: channel,
        nonce,
        amount,
    };
    digest(chain_id, refund.eip712_hash_struct())
}

/// The digest the receiver authorizer signs for `claimWithSignature`.
pub fn claim_batch_digest(claims: Vec<ClaimEntry>, chain_id: u64) -> B256 {
    digest(chain_id, ClaimBatch { claims }.eip712_hash_struct())
}

/// The ERC-3009 nonce of a deposit: `keccak256(abi.encode(channelId, salt))`.
pub fn deposit_nonce(channel: B256, salt: U256) -> B256 {
    keccak256((channel, salt).abi_encode())
}

/// A channel configuration as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfigJson {
    /// The paying wallet.
    pub payer: Address,
    /// The EOA that signs vouchers, or zero (the payer signs, EIP-1271 allowed).
    pub payer_authorizer: Address,
    /// The offer's `payTo`.
    pub receiver: Address,
    /// The offer's `extra.receiverAuthorizer`.
    pub receiver_authorizer: Address,
    /// The offer's asset.
    pub token: Address,
    /// The offer's `extra.withdrawDelay`, in seconds.
    pub withdraw_delay: u64,
    /// The payer's choice, to tell channels apart.
    pub salt: B256,
}

impl ChannelConfigJson {
    /// The typed configuration, if `withdrawDelay` fits its 40 bits.
    pub fn typed(&self) -> Option<ChannelConfig> {
        Some(ChannelConfig {
            payer: self.payer,
            payerAuthorizer: self.payer_authorizer,
            receiver: self.receiver,
            receiverAuthorizer: self.receiver_authorizer,
            token: self.token,
            withdrawDelay: alloy_primitives::aliases::U40::try_from(self.withdraw_delay).ok()?,
            salt: self.salt,
        })
    }
}

/// A signed voucher as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoucherJson {
    /// The channel.
    pub channel_id: B256,
    /// The cumulative ceiling, a decimal string.
    pub max_claimable_amount: String,
    /// The signature, hex.
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{b256, hex};

    /// The channel of the reference client's deposit on the local chain (anvil #1 pays anvil #2,
    /// chain 84532), with the digests the deployed contract's own view functions return.
    fn reference_config() -> ChannelConfig {
        ChannelConfig {
            payer: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            payerAuthorizer: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            receiver: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            receiverAuthorizer: address!("0xF700794002FA597b646764b9422954303bab2003"),
            token: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            withdrawDelay: alloy_primitives::aliases::U40::from(900u64),
            salt: B256::ZERO,
        }
    }

    const CHANNEL: B256 =
        b256!("0x36019b206adfd1569f695771aa56534a4fcffd032efad72948e0e8b8016aac21");

    #[test]
    fn digests_match_the_reference_client_and_the_contract() {
        assert_eq!(
            domain(84_532).separator(),
            b256!("0xfdef80764086b1e0fc6ba99f0cb9aa1d59109fda7c23d60334c89d2de44dffce")
        );
        assert_eq!(channel_id(&reference_config(), 84_532), CHANNEL);
        assert_ne!(
            channel_id(&reference_config(), 8453),
            CHANNEL,
            "chain-bound"
        );
        assert_eq!(
            voucher_digest(CHANNEL, 1000, 84_532),
            b256!("0xbd55a8325f82aced1ea33e9b10bd788439bb963c1eb3c47c7c4d32eb1f188e71")
        );
        assert_eq!(
            refund_digest(CHANNEL, U256::ZERO, 1000, 84_532),
            b256!("0x6856f69fe1ac2b6639f05f491ebe9ca79b521a255d2e5fcf915f97d283285a2b")
        );
        let claims = vec![ClaimEntry {
            channelId: CHANNEL,
            maxClaimableAmount: 4000,
            totalClaimed: 4000,
        }];
        assert_eq!(
            claim_batch_digest(claims, 84_532),
            b256!("0x3f0dc9b94957cddf1ad2acaa4e6cd15d76cece9c07893256e557908b31bc3a65")
        );
        let salt = U256::from_be_bytes(
            b256!("0x6deedbde0dd64b70eca608aca7fa60654ede80c487c361b7e1aefa203ea55976").0,
        );
        assert_eq!(
            deposit_nonce(CHANNEL, salt),
            b256!("0x5f21785ce64d39ddc325eccda7d9c284a143fdb54a36c0b03679d177adda096a")
        );
    }

    #[test]
    fn reference_signatures_recover_to_their_signers() {
        let voucher = hex!(
            "769027891aed9baf8282720f1c4a429282c771efa99f5b2ce40d29941f915fe07b3b397013f515a1daa92dae2638069265f728b0d78b0732159bfa14d80fbb9b1b"
        );
        assert_eq!(
            crate::exact::recover_signer(&voucher_digest(CHANNEL, 4000, 84_532), &voucher),
            Some(address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"))
        );
        let claim = hex!(
            "87fab603adbd7bffba4ec5a1e4c4ef2f43e25ba0696aa9ac36bea05923f555a86a0fb67ab3af45cfa84aa51819935c27287c755fe73d6a953fe2de2f37afbc5e1c"
        );
        let digest = claim_batch_digest(
            vec![ClaimEntry {
                channelId: CHANNEL,
                maxClaimableAmount: 4000,
                totalClaimed: 4000,
            }],
            84_532,
        );
        assert_eq!(
            crate::exact::recover_signer(&digest, &claim),
            Some(address!("0xF700794002FA597b646764b9422954303bab2003"))
        );
    }

    #[test]
    fn payload_configs_parse_as_the_reference_client_writes_them() {
        let json = serde_json::json!({
            "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "payerAuthorizer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "receiver": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "receiverAuthorizer": "0xF700794002FA597b646764b9422954303bab2003",
            "token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "withdrawDelay": 900,
            "salt": "0x0000000000000000000000000000000000000000000000000000000000000000"
        });
        let config: ChannelConfigJson = serde_json::from_value(json).unwrap();
        assert_eq!(config.typed().unwrap(), reference_config());
        let too_long = ChannelConfigJson {
            withdraw_delay: 1 << 40,
            ..config
        };
        assert!(too_long.typed().is_none());
    }
}
