//! anvil's well-known test accounts (the default mnemonic `test test … junk`). These keys are
//! public and hold nothing outside a local dev chain.

use alloy_primitives::{Address, B256, address, b256};

/// One of anvil's ten default accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnvilAccount {
    /// Index in anvil's list (0–9).
    pub index: usize,
    /// The account's address.
    pub address: Address,
    /// Its private key.
    pub private_key: B256,
}

impl AnvilAccount {
    /// The private key as `0x` + 64 lower-case hex digits.
    pub fn key_hex(&self) -> String {
        format!("{:#x}", self.private_key)
    }

    /// The address in EIP-55 checksum casing, as clients write it.
    pub fn address_checksummed(&self) -> String {
        self.address.to_checksum(None)
    }
}

const fn account(index: usize, address: Address, private_key: B256) -> AnvilAccount {
    AnvilAccount {
        index,
        address,
        private_key,
    }
}

/// anvil's default accounts #0–#9.
pub const ANVIL_ACCOUNTS: [AnvilAccount; 10] = [
    account(
        0,
        address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        b256!("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
    ),
    account(
        1,
        address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        b256!("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
    ),
    account(
        2,
        address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
        b256!("0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"),
    ),
    account(
        3,
        address!("0x90F79bf6EB2c4f870365E785982E1f101E93b906"),
        b256!("0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"),
    ),
    account(
        4,
        address!("0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"),
        b256!("0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"),
    ),
    account(
        5,
        address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"),
        b256!("0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"),
    ),
    account(
        6,
        address!("0x976EA74026E726554dB657fA54763abd0C3a0aa9"),
        b256!("0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"),
    ),
    account(
        7,
        address!("0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"),
        b256!("0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"),
    ),
    account(
        8,
        address!("0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"),
        b256!("0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97"),
    ),
    account(
        9,
        address!("0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"),
        b256!("0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"),
    ),
];

/// #0: deployed the token and holds every admin role (owner, master minter, minter, pauser,
/// blacklister, lost-and-found).
pub const ADMIN_ACCOUNT: AnvilAccount = ANVIL_ACCOUNTS[0];
/// #1: the buyer that signs the payment fixtures (funded with 1000 USDC, like #2–#5).
pub const BUYER_ACCOUNT: AnvilAccount = ANVIL_ACCOUNTS[1];
/// #2: the `payTo` of the payment fixtures (also funded; compare balances before and after).
pub const PAYEE_ACCOUNT: AnvilAccount = ANVIL_ACCOUNTS[2];
/// #8: suggested key for hb402's own local settlement (an operator paying gas).
pub const OPERATOR_ACCOUNT: AnvilAccount = ANVIL_ACCOUNTS[8];
/// #9: suggested key for the reference [`Facilitator`](crate::Facilitator).
pub const FACILITATOR_ACCOUNT: AnvilAccount = ANVIL_ACCOUNTS[9];

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    #[test]
    fn keys_match_addresses() {
        for account in ANVIL_ACCOUNTS {
            let key = SigningKey::from_slice(account.private_key.as_slice()).unwrap();
            assert_eq!(
                Address::from_private_key(&key),
                account.address,
                "account #{}",
                account.index
            );
        }
        assert!(ANVIL_ACCOUNTS.iter().enumerate().all(|(i, a)| a.index == i));
    }
}
