//! A local x402 chain for hb402's tests.
//!
//! - [`LocalChain`] starts anvil (from the pinned npm package) on 127.0.0.1 with Base Sepolia's
//!   chain id 84532 and installs Circle's FiatTokenV2_2 at the real Base Sepolia USDC address
//!   (EIP-712 domain `USDC` / `2`), funding anvil accounts #1–#5 with 1000 USDC each. Because the
//!   token sits at a default asset on a default network, **unmodified** x402 clients pay it with
//!   their default spend controls.
//! - [`Facilitator`] runs the TypeScript reference facilitator (`x402Facilitator` with the EVM
//!   `exact` scheme, v2 `eip155:84532` and v1 `base-sepolia`) against that chain behind a small
//!   HTTP server.
//! - [`payments`] / [`payments_at`] make x402 payment payloads with the unmodified `@x402/evm`
//!   (v2 and v1) and legacy `x402` (v1) clients; [`payments_fixture`] is a committed set of them.
//! - [`pay`] has a real client — `@x402/fetch`, legacy `x402-fetch` or the PyPI `x402` client,
//!   each through its own unmodified HTTP wrapper — GET a URL and pay its 402.
//! - [`browse`] has a person pay in a browser: headless Chromium (Debian's `chromium`, driven by
//!   `puppeteer-core`) opens an hb402 URL with a test wallet in the page and plays one scenario.
//! - [`batch_pay`] has the unmodified `batch-settlement` client read many URLs on one channel.
//! - [`RedisServer`] runs a throw-away `redis-server` (Debian package `redis-server`) for the
//!   Redis store.
//!
//! Everything binds to loopback with kernel-chosen ports, every wait has a deadline, and child
//! processes die with the value that owns them. Failures panic with the child's recent output:
//! this crate is meant for tests only.
//!
//! The JavaScript side lives in `crates/testkit/js`; install it once with
//! `npm ci --ignore-scripts` there (`scripts/test.sh` does it). Tests should call [`ensure_js`]
//! (the constructors here do) to get a clear message when it is missing. The Python client lives
//! in a virtualenv at `crates/testkit/py/.venv` (`pip install -r requirements.txt`, also done by
//! `scripts/test.sh`); [`ensure_python`] checks it.
//!
//! Account roles on the local chain: #0 deploys and administers the token (owner, minter, …),
//! #1–#5 are funded buyers, #6–#9 hold only ETH and are meant for facilitators and settlement
//! operators ([`FACILITATOR_ACCOUNT`] is #9). Give concurrently running signers distinct
//! accounts, or their transaction nonces collide.

mod accounts;
mod batch;
mod browser;
mod chain;
mod facilitator;
mod js;
mod pay;
mod payments;
mod process;
mod redis;

pub use accounts::{
    ADMIN_ACCOUNT, ANVIL_ACCOUNTS, AnvilAccount, BUYER_ACCOUNT, FACILITATOR_ACCOUNT,
    OPERATOR_ACCOUNT, PAYEE_ACCOUNT,
};
pub use batch::{BATCH_PAY_TIMEOUT, BatchRead, BatchRun, batch_pay};
pub use browser::{BROWSER_TIMEOUT, browse, chromium, ensure_browser};
pub use chain::{
    CHAIN_ID, DOMAIN_SEPARATOR, LocalChain, MINTED_PER_ACCOUNT, NETWORK_V1, NETWORK_V2, USDC,
    USDC_NAME, USDC_VERSION,
};
pub use facilitator::{Facilitator, FacilitatorOptions};
pub use js::{ensure_js, js_dir};
pub use pay::{
    PAY_TIMEOUT, PayClient, PayOptions, PayResult, ensure_python, pay, pay_with, py_dir,
    try_pay_with,
};
pub use payments::{
    PAYMENTS_FIXTURE_JSON, PaymentOptions, payments, payments_at, payments_fixture,
};
pub use redis::RedisServer;

/// A loopback port the kernel just handed out and that nobody in this process was given before
/// (released again, for a server to bind).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if given
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}
