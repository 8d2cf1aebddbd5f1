//! How channels reach the chain. With local settlement hb402 reads over its RPC and sends
//! deposits, claims, refunds and `settle` with the operator key. With a facilitator, hb402 reads
//! the channels' state over `payments.rpc_url` (plain `eth_call`s, no key) and the facilitator
//! sends the transactions: its `/settle` takes the `batch-settlement` payloads of `@x402/evm`'s
//! facilitator — the client's `deposit` as it came, and `claim`, `refund` and `settle` payloads
//! that hb402 makes, with the receiver authorizer's signatures made by hb402 (the facilitator
//! needs no key of the operator's).

use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes};
use hb402_x402::batch::{BATCH_SETTLEMENT, ChannelConfigJson, IBatchSettlement};
use hb402_x402::facilitator::SETTLEMENT_PENDING;
use hb402_x402::{Facilitator, FacilitatorError, SettleResponse, VerifyRequest};
use serde_json::{Value, json};

use crate::chain::ChainProbe;
use crate::facilitator::{LocalSettlement, Sent};

/// The way to the chain.
pub(crate) enum Link {
    /// hb402 reads and sends itself (`payments.mode = "local"`).
    Local(Arc<LocalSettlement>),
    /// Reads over an RPC; transactions through a facilitator.
    Facilitator(ViaFacilitator),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Local(_) => "Link::Local",
            Link::Facilitator(_) => "Link::Facilitator",
        })
    }
}

/// A facilitator that sends channel transactions, and the RPC channel state is read over.
pub(crate) struct ViaFacilitator {
    reads: ChainProbe,
    facilitator: Arc<dyn Facilitator>,
    /// `eip155:<chain id>`.
    network: String,
    receiver_authorizer: Address,
    withdraw_delay: u64,
    /// The tokens offered on the chain: their EIP-712 domains, which a deposit's
    /// authorization is checked under.
    assets: Vec<hb402_x402::Asset>,
}

/// What a facilitator-sent transaction is for: which of its refusals are the payer's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A payer's deposit: a refusal of its authorization or voucher is the payer's doing.
    Deposit,
    /// Anything hb402 asks for (claims, refunds, `settle`).
    Operator,
    /// A call that runs a contract payer's code (its deposit, claim or refund): that code can
    /// make the facilitator fail at any step, so every refusal of the facilitator's but its
    /// own operational ones is the payer's.
    Contract,
}

impl ViaFacilitator {
    /// Channels of `batch`'s chain, read over `reads`, sent by `facilitator`, in `assets`.
    pub(crate) fn new(
        reads: ChainProbe,
        facilitator: Arc<dyn Facilitator>,
        batch: &crate::config::BatchConfig,
        assets: Vec<hb402_x402::Asset>,
    ) -> Self {
        ViaFacilitator {
            reads,
            facilitator,
            network: format!("eip155:{}", batch.chain_id),
            receiver_authorizer: batch.receiver_authorizer,
            withdraw_delay: batch.withdraw_delay.as_secs(),
            assets,
        }
    }

    /// The offer a payload is sent under: a `batch-settlement` offer of `token` to `receiver`.
    fn requirements(&self, receiver: Address, token: Address, amount: u128) -> Value {
        let asset = self.assets.iter().find(|a| a.address == token);
        json!({
            "scheme": hb402_x402::batch::SCHEME_BATCH,
            "network": self.network,
            "asset": token,
            "amount": amount.to_string(),
            "payTo": receiver,
            "maxTimeoutSeconds": 300,
            "extra": {
                "receiverAuthorizer": self.receiver_authorizer,
                "withdrawDelay": self.withdraw_delay,
                "name": asset.map(|a| a.eip712_name.as_str()),
                "version": asset.map(|a| a.eip712_version.as_str()),
            },
        })
    }

    /// Asks the facilitator to settle `payload` under the offer of `token` to `receiver`;
    /// `call`: the batch contract's call the facilitator is to make of it.
    ///
    /// A facilitator tells a call that reverts from one it could not simulate (its RPC failed)
    /// by its message only: when it says the call reverts, hb402 runs the call itself over its
    /// own RPC, and only if it reverts there too is it the payer's doing or the channel's. Not
    /// for a call that runs a contract payer's code (`contract`): that code can tell hb402's
    /// call from the facilitator's (one has a sender, the other not), so the facilitator's
    /// refusal stands.
    pub(crate) async fn settle(
        &self,
        (receiver, token): (Address, Address),
        (amount, call): (u128, Bytes),
        payload: Value,
        (purpose, contract): (Purpose, bool),
    ) -> Sent {
        let requirements = self.requirements(receiver, token, amount);
        let request = VerifyRequest {
            x402_version: 2,
            payment_payload: json!({
                "x402Version": 2,
                "accepted": requirements,
                "payload": payload,
            }),
            payment_requirements: requirements,
        };
        let purpose = if contract { Purpose::Contract } else { purpose };
        match sent(self.facilitator.settle(&request).await, purpose) {
            Sent::Reverts if contract => Sent::Reverts,
            Sent::Reverts => match self.reads.reverts(BATCH_SETTLEMENT, call).await {
                Some(true) => Sent::Reverts,
                reverts => {
                    tracing::warn!(
                        ?purpose,
                        ?reverts,
                        "the facilitator refused a call that does not revert here"
                    );
                    Sent::Unsent
                }
            },
            other => other,
        }
    }
}

/// What became of a transaction the facilitator was asked for, as [`Sent`] tells it of one
/// hb402 sent: mined; refused by the simulation (or, for a deposit, refused as the payer's
/// doing); mined and reverted; not sent; or not known yet.
pub(crate) fn sent(answer: Result<SettleResponse, FacilitatorError>, purpose: Purpose) -> Sent {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e, "facilitator unreachable");
            return Sent::Unknown;
        }
    };
    if answer.success {
        return match answer.transaction.parse::<B256>() {
            Ok(tx) => Sent::Mined(tx),
            Err(_) => Sent::Unknown,
        };
    }
    let reason = answer.error_reason.as_deref().unwrap_or_default();
    let operational = [
        "invalid_batch_settlement_evm_rpc_read_failed",
        "invalid_batch_settlement_evm_authorizer_not_configured",
        "invalid_batch_settlement_evm_authorizer_address_mismatch",
        "invalid_batch_settlement_evm_scheme",
        "invalid_batch_settlement_evm_network_mismatch",
        "invalid_batch_settlement_evm_payload_type",
    ];
    match reason {
        SETTLEMENT_PENDING => Sent::Unknown,
        // Mined and reverted; or, with no transaction, not sent (the facilitator's gas, its
        // nonce, its RPC): nobody's doing but the facilitator's.
        r if r.ends_with("_transaction_failed") => match (answer.transaction.is_empty(), purpose) {
            (false, _) => Sent::Reverted,
            (true, Purpose::Contract) => Sent::Reverts,
            (true, _) => Sent::Unsent,
        },
        r if r.ends_with("_simulation_failed") => Sent::Reverts,
        r if purpose != Purpose::Operator
            && r.starts_with("invalid_batch_settlement_evm_")
            && !operational.contains(&r) =>
        {
            Sent::Reverts
        }
        _ => Sent::Unsent,
    }
}

/// The `claim` payload of a `claimWithSignature` call.
pub(crate) fn claim_payload(call: &IBatchSettlement::claimWithSignatureCall) -> Value {
    json!({
        "type": "claim",
        "claims": call.claims.iter().map(|c| json!({
            "voucher": {
                "channel": ChannelConfigJson::from(&c.voucher.channel),
                "maxClaimableAmount": c.voucher.maxClaimableAmount.to_string(),
            },
            "signature": c.signature,
            "totalClaimed": c.totalClaimed.to_string(),
        })).collect::<Vec<_>>(),
        "claimAuthorizerSignature": call.authorizerSignature,
    })
}

/// The `refund` payload of a `refundWithSignature` call, after `claim` when there is one;
/// `voucher`: the channel's latest (its ceiling and signature).
pub(crate) fn refund_payload(
    refund: &IBatchSettlement::refundWithSignatureCall,
    channel_id: B256,
    voucher: (u128, &[u8]),
    claim: Option<&IBatchSettlement::claimWithSignatureCall>,
) -> Value {
    let mut payload = json!({
        "type": "refund",
        "channelConfig": ChannelConfigJson::from(&refund.config),
        "voucher": {
            "channelId": channel_id,
            "maxClaimableAmount": voucher.0.to_string(),
            "signature": Bytes::copy_from_slice(voucher.1),
        },
        "amount": refund.amount.to_string(),
        "refundNonce": refund.nonce.to_string(),
        "claims": [],
        "refundAuthorizerSignature": refund.signature,
    });
    if let Some(claim) = claim {
        let claims = claim_payload(claim);
        payload["claims"] = claims["claims"].clone();
        payload["claimAuthorizerSignature"] = claims["claimAuthorizerSignature"].clone();
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(success: bool, reason: Option<&str>, tx: &str) -> SettleResponse {
        SettleResponse {
            success,
            error_reason: reason.map(str::to_owned),
            error_message: None,
            payer: None,
            transaction: tx.to_owned(),
            network: "eip155:84532".into(),
        }
    }

    /// A refusal `invalid_batch_settlement_evm_<code>`, naming transaction `tx` (or none).
    fn refusal(code: &str, tx: &str) -> SettleResponse {
        answer(
            false,
            Some(&format!("invalid_batch_settlement_evm_{code}")),
            tx,
        )
    }

    #[test]
    fn facilitator_answers_read_as_what_became_of_the_transaction() {
        use Purpose::{Contract, Deposit, Operator};
        let tx = format!("0x{}", "ab".repeat(32));
        let cases = [
            (answer(true, None, &tx), Operator, "Mined"),
            (answer(true, None, "0x12"), Operator, "Unknown"),
            (
                answer(false, Some(SETTLEMENT_PENDING), &tx),
                Deposit,
                "Unknown",
            ),
            (
                refusal("claim_transaction_failed", &tx),
                Operator,
                "Reverted",
            ),
            (refusal("claim_transaction_failed", ""), Operator, "Unsent"),
            (refusal("claim_simulation_failed", ""), Operator, "Reverts"),
            (refusal("voucher_signature", ""), Deposit, "Reverts"),
            (refusal("voucher_signature", ""), Operator, "Unsent"),
            (refusal("rpc_read_failed", ""), Deposit, "Unsent"),
            (refusal("deposit_transaction_failed", ""), Deposit, "Unsent"),
            // A contract payer's code can make the facilitator fail at any step.
            (refusal("claim_transaction_failed", ""), Contract, "Reverts"),
            (refusal("voucher_signature", ""), Contract, "Reverts"),
            (refusal("rpc_read_failed", ""), Contract, "Unsent"),
        ];
        for (answer, purpose, want) in cases {
            let reason = answer.error_reason.clone();
            let got = format!("{:?}", sent(Ok(answer), purpose));
            assert!(got.starts_with(want), "{reason:?} {purpose:?}: {got}");
        }
        let down = sent(Err(FacilitatorError::Timeout(5)), Purpose::Operator);
        assert!(matches!(down, Sent::Unknown), "{down:?}");
    }
}
