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

    /// Whether transaction `tx` succeeded and moved the authorized transfer.
    async fn transferred_in(&self, a: &Authorization, tx: B256) -> Result<bool, ChainError> {
        let Some(receipt) = self.rpc(self.provider.get_transaction_receipt(tx)).await? else {
            return Ok(false);
        };
        Ok(receipt.status() && receipt.logs().iter().any(|log| is_transfer(log, a)))
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

fn is_transfer(log: &Log, a: &Authorization) -> bool {
    log.address() == a.asset
        && IAuthorizationToken::Transfer::decode_log(&log.inner)
            .is_ok_and(|t| t.from == a.from && t.to == a.to && t.value == a.value)
}
