//! What became of an authorization on chain, read over an EVM JSON-RPC.
//!
//! hb402 asks this when a settlement's outcome was not reported (the facilitator timed out, the
//! transaction was still pending at the deadline, hb402 restarted meanwhile). An EIP-3009
//! authorization is used at most once, and `transferWithAuthorization` moves exactly `value`
//! from `from` to `to` or reverts; so the authorization is either unused, or used by a
//! transaction whose logs show the transfer (then the payee was paid), or used otherwise
//! (cancelled, or a different authorization with the same nonce: the payee was not paid).

use std::future::IntoFuture;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log};
use alloy::sol;
use alloy::sol_types::SolEvent;

sol! {
    interface IAuthorizationToken {
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
    }
}

/// The most gas a contract account's signature check (EIP-1271 `isValidSignature`) is given
/// when hb402 asks it: a wallet's check takes a few tens of thousands; one that wants more is
/// taken as refusing (it could otherwise make every read cost the node a block's gas).
pub const SIGNATURE_CHECK_GAS: u64 = 200_000;

/// How far back a used authorization's transaction is looked for.
const LOOKBACK_BLOCKS: u64 = 50_000;

/// One authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// The token.
    pub asset: Address,
    /// Payer.
    pub from: Address,
    /// Payee.
    pub to: Address,
    /// Amount.
    pub value: U256,
    /// Nonce.
    pub nonce: B256,
}

/// What became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Used by this transaction, which moved `value` from `from` to `to`.
    Transferred(B256),
    /// Not used (yet).
    Unused,
    /// Used without paying the payee (cancelled, or another authorization with its nonce).
    UsedOtherwise,
}

/// Why the chain could not be read.
#[derive(Debug, thiserror::Error)]
#[error("chain unreadable: {0}")]
pub struct ChainError(String);

/// A read-only view of one chain.
#[derive(Debug, Clone)]
pub struct ChainProbe {
    provider: DynProvider,
    timeout: Duration,
}

impl ChainProbe {
    /// A probe over `rpc_url`, each call bounded by `timeout`.
    pub fn new(rpc_url: &str, timeout: Duration) -> Result<Self, ChainError> {
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError("invalid RPC URL".into()))?;
        Ok(ChainProbe {
            provider: ProviderBuilder::new().connect_http(url).erased(),
            timeout,
        })
    }

    async fn rpc<T, E: std::fmt::Display>(
        &self,
        call: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.timeout, call.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ChainError(e.to_string())),
            Err(_) => Err(ChainError("timed out".into())),
        }
    }

    /// Calls `to` with `input` without a transaction (`eth_call`): what it returns.
    pub(crate) async fn view(
        &self,
        to: Address,
        input: alloy::primitives::Bytes,
    ) -> Result<alloy::primitives::Bytes, ChainError> {
        let request = alloy::rpc::types::TransactionRequest::default()
            .to(to)
            .input(input.into());
        self.rpc(self.provider.call(request)).await
    }

    /// An `eth_call` of `to` with `input` (given `gas` when set): what it returned, `Ok(Err)`
    /// when the node answered with an error (the call reverts or runs out of gas), `Err` when
    /// the node could not be asked or did not answer in time.
    async fn try_call(
        &self,
        to: Address,
        input: Vec<u8>,
        gas: Option<u64>,
    ) -> Result<Result<alloy::primitives::Bytes, ()>, ChainError> {
        let mut request = alloy::rpc::types::TransactionRequest::default()
            .to(to)
            .input(input.into());
        request.gas = gas;
        match tokio::time::timeout(self.timeout, self.provider.call(request).into_future()).await {
            Ok(Ok(out)) => Ok(Ok(out)),
            Ok(Err(alloy::transports::RpcError::ErrorResp(_))) => Ok(Err(())),
            Ok(Err(e)) => Err(ChainError(e.to_string())),
            Err(_) => Err(ChainError("timed out".into())),
        }
    }

    /// Whether contract account `signer` takes `signature` of `digest` (EIP-1271: its
    /// `isValidSignature` answers its own selector), given [`SIGNATURE_CHECK_GAS`]. An account
    /// without code, a check that reverts, runs out of gas or answers anything else: `false`.
    pub(crate) async fn accepts(
        &self,
        signer: Address,
        digest: B256,
        signature: &[u8],
    ) -> Result<bool, ChainError> {
        use alloy::sol_types::SolCall as _;
        use hb402_x402::batch::IERC1271::isValidSignatureCall;
        let call = isValidSignatureCall {
            hash: digest,
            signature: signature.to_vec().into(),
        };
        let mut magic = [0u8; 32];
        magic[..4].copy_from_slice(&isValidSignatureCall::SELECTOR);
        let answer = self
            .try_call(signer, call.abi_encode(), Some(SIGNATURE_CHECK_GAS))
            .await?;
        Ok(answer.is_ok_and(|out| out.get(..32) == Some(magic.as_slice())))
    }

    /// Whether calling `to` with `input` reverts (the node answered the `eth_call` with an
    /// error); `None` when the node could not be asked or did not answer in time.
    pub(crate) async fn reverts(
        &self,
        to: Address,
        input: alloy::primitives::Bytes,
    ) -> Option<bool> {
        let answer = self.try_call(to, input.to_vec(), None).await.ok()?;
        Some(answer.is_err())
    }

    /// Whether transaction `tx` succeeded and moved the authorized transfer.
    async fn transferred_in(&self, a: &Authorization, tx: B256) -> Result<bool, ChainError> {
        let Some(receipt) = self.rpc(self.provider.get_transaction_receipt(tx)).await? else {
            return Ok(false);
        };
        Ok(receipt.status() && paid_in(receipt.logs(), a))
    }

    /// What became of `a`; `hint` is a transaction reported for it, if any.
    pub async fn outcome(
        &self,
        a: &Authorization,
        hint: Option<B256>,
    ) -> Result<Outcome, ChainError> {
        if let Some(tx) = hint
            && self.transferred_in(a, tx).await?
        {
            return Ok(Outcome::Transferred(tx));
        }
        let state = IAuthorizationToken::authorizationStateCall {
            authorizer: a.from,
            nonce: a.nonce,
        };
        let used = self
            .rpc(alloy::contract::SolCallBuilder::new_sol(&self.provider, &a.asset, &state).call())
            .await?;
        if !used {
            return Ok(Outcome::Unused);
        }
        let latest = self.rpc(self.provider.get_block_number()).await?;
        let filter = Filter::new()
            .address(a.asset)
            .event_signature(IAuthorizationToken::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(a.from.into_word())
            .topic2(a.nonce)
            .from_block(latest.saturating_sub(LOOKBACK_BLOCKS));
        let logs = self.rpc(self.provider.get_logs(&filter)).await?;
        for tx in logs.iter().filter_map(|l| l.transaction_hash) {
            if self.transferred_in(a, tx).await? {
                return Ok(Outcome::Transferred(tx));
            }
        }
        Ok(Outcome::UsedOtherwise)
    }
}

/// Whether `logs` (one transaction's) show `a` used to pay: its `AuthorizationUsed` event next
/// to the transfer it authorized, both from the token. A transaction may carry many
/// authorizations (a batch), some of which failed; only this one's events count.
pub(crate) fn paid_in(logs: &[Log], a: &Authorization) -> bool {
    logs.iter().enumerate().any(|(i, log)| {
        is_use_of(log, a)
            && [i.checked_sub(1), i.checked_add(1)]
                .into_iter()
                .flatten()
                .filter_map(|j| logs.get(j))
                .any(|next| is_transfer(next, a))
    })
}

fn is_use_of(log: &Log, a: &Authorization) -> bool {
    log.address() == a.asset
        && IAuthorizationToken::AuthorizationUsed::decode_log(&log.inner)
            .is_ok_and(|u| u.authorizer == a.from && u.nonce == a.nonce)
}

fn is_transfer(log: &Log, a: &Authorization) -> bool {
    log.address() == a.asset
        && IAuthorizationToken::Transfer::decode_log(&log.inner)
            .is_ok_and(|t| t.from == a.from && t.to == a.to && t.value == a.value)
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{LogData, address, b256};

    use super::*;

    const TOKEN: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    const PAYER: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
    const PAYEE: Address = address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

    fn auth(nonce: B256) -> Authorization {
        Authorization {
            asset: TOKEN,
            from: PAYER,
            to: PAYEE,
            value: U256::from(10_000u64),
            nonce,
        }
    }

    fn log(address: Address, data: LogData) -> Log {
        Log {
            inner: alloy::primitives::Log { address, data },
            ..Log::default()
        }
    }

    fn used(a: &Authorization) -> Log {
        let event = IAuthorizationToken::AuthorizationUsed {
            authorizer: a.from,
            nonce: a.nonce,
        };
        log(a.asset, event.encode_log_data())
    }

    fn transfer(a: &Authorization, value: U256) -> Log {
        let event = IAuthorizationToken::Transfer {
            from: a.from,
            to: a.to,
            value,
        };
        log(a.asset, event.encode_log_data())
    }

    #[test]
    fn each_authorization_of_a_batch_is_found_by_its_own_events() {
        let one = auth(b256!(
            "0000000000000000000000000000000000000000000000000000000000000001"
        ));
        let two = auth(b256!(
            "0000000000000000000000000000000000000000000000000000000000000002"
        ));
        let three = auth(b256!(
            "0000000000000000000000000000000000000000000000000000000000000003"
        ));
        // One and three were paid in this transaction (same payer, payee and value); two's
        // call failed and left nothing.
        let logs = [
            used(&one),
            transfer(&one, one.value),
            used(&three),
            transfer(&three, three.value),
        ];
        assert!(paid_in(&logs, &one));
        assert!(!paid_in(&logs, &two));
        assert!(paid_in(&logs, &three));
    }

    #[test]
    fn a_use_without_its_transfer_or_from_another_contract_is_not_a_payment() {
        let a = auth(B256::repeat_byte(7));
        // The authorization used, but the transfer next to it is another amount.
        assert!(!paid_in(&[used(&a), transfer(&a, U256::from(1u64))], &a));
        // A transfer alone (someone else's call) is not this authorization's.
        assert!(!paid_in(&[transfer(&a, a.value)], &a));
        // Events with the right shape from another contract.
        let forged = Authorization { asset: PAYEE, ..a };
        assert!(!paid_in(&[used(&forged), transfer(&forged, a.value)], &a));
        // Emitted in the other order, still adjacent.
        assert!(paid_in(&[transfer(&a, a.value), used(&a)], &a));
    }
}
