//! The TypeScript reference facilitator on the local chain.

use std::process::Command;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use k256::ecdsa::SigningKey;

use crate::chain::LocalChain;
use crate::process::Service;

const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of [`Facilitator::start_with`].
#[derive(Debug, Clone, Default)]
pub struct FacilitatorOptions {
    /// Bound on each receipt wait during settlement (the reference default is 180 s). A settle
    /// whose receipt does not arrive in time answers `settlement_pending` with the hash.
    pub confirmation_timeout: Option<Duration>,
    /// The RPC it reads and sends over, instead of the chain's (one that does not answer makes
    /// a facilitator that cannot simulate nor send anything).
    pub rpc_url: Option<String>,
}

/// A running reference facilitator (`facilitator.mjs`); killed when dropped.
///
/// It is `x402Facilitator` from `@x402/core` with `ExactEvmScheme` from `@x402/evm`, registered
/// for v2 `eip155:84532` and v1 `base-sepolia`, settling with the given key. Routes:
/// `POST /verify`, `POST /settle`, `GET /supported`, `GET /health`. Like the reference example
/// server it answers 200 with the facilitator's `VerifyResponse` / `SettleResponse` whether or
/// not the payment is valid, 400 `{"error"}` for a body without `paymentPayload` /
/// `paymentRequirements` (or not JSON), and 500 `{"error"}` when the facilitator throws.
#[derive(Debug)]
pub struct Facilitator {
    service: Service,
    url: String,
    signer: Address,
}

impl Facilitator {
    /// Starts the facilitator on 127.0.0.1 (kernel-chosen port), settling with `signer_key` over
    /// `chain`. Give it an account no other signer uses concurrently, e.g.
    /// [`FACILITATOR_ACCOUNT`](crate::FACILITATOR_ACCOUNT). Takes about a second.
    pub async fn start(chain: &LocalChain, signer_key: B256) -> Facilitator {
        Self::start_with(chain, signer_key, FacilitatorOptions::default()).await
    }

    /// [`Facilitator::start`] with options.
    pub async fn start_with(
        chain: &LocalChain,
        signer_key: B256,
        options: FacilitatorOptions,
    ) -> Facilitator {
        crate::js::ensure_js();
        let key = SigningKey::from_slice(signer_key.as_slice())
            .expect("signer_key is a valid secp256k1 key");
        let signer = Address::from_private_key(&key);

        let mut command = Command::new(crate::js::node());
        command.current_dir(crate::js::js_dir()).args([
            "facilitator.mjs",
            "--rpc",
            options.rpc_url.as_deref().unwrap_or(chain.rpc_url()),
            "--key",
            &format!("{signer_key:#x}"),
            "--port",
            "0",
        ]);
        if let Some(timeout) = options.confirmation_timeout {
            command.args([
                "--confirmation-timeout-ms",
                &timeout.as_millis().to_string(),
            ]);
        }
        let (mut service, ready) = Service::spawn(
            "facilitator",
            command,
            Box::new(|line: &str| line.trim().strip_prefix("listening on ").map(str::to_owned)),
        );
        let url = match tokio::time::timeout(LISTEN_TIMEOUT, ready).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => service.fail("exited before listening"),
            Err(_) => service.fail(&format!("not listening after {LISTEN_TIMEOUT:?}")),
        };
        if !url.starts_with("http://127.0.0.1:") {
            service.fail(&format!(
                "listening on {url}, expected http://127.0.0.1:PORT"
            ));
        }
        Facilitator {
            service,
            url,
            signer,
        }
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address that pays gas and submits settlements.
    pub fn signer(&self) -> Address {
        self.signer
    }

    /// Recent output: one stderr line per request (method, path, status, duration, answer).
    pub fn logs(&self) -> String {
        self.service.logs()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.service.is_running()
    }

    /// Kills the facilitator now (for fault tests); its port then refuses connections.
    pub fn kill(&mut self) {
        self.service.kill();
    }
}
