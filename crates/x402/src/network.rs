//! EVM networks (v1 names, CAIP-2 ids, chain ids) and the assets offered on them (USDC by default),
//! with their EIP-712 domains. Operators add networks and assets (a local development chain) from
//! configuration.

use alloy_primitives::Address;

/// An EVM network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The v1 name (`base-sepolia`), if v1 clients can use it.
    pub v1_name: Option<String>,
    /// The EVM chain id.
    pub chain_id: u64,
}

impl Network {
    /// The CAIP-2 id, `eip155:<chain id>`.
    pub fn caip2(&self) -> String {
        format!("eip155:{}", self.chain_id)
    }
}

/// A token offered on a network, with the EIP-712 domain of its EIP-3009 signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Chain the token lives on.
    pub chain_id: u64,
    /// Contract address (the EIP-712 `verifyingContract`).
    pub address: Address,
    /// Decimals (USDC: 6).
    pub decimals: u8,
    /// Symbol, for display.
    pub symbol: String,
    /// EIP-712 domain name (`USD Coin` on Base, `USDC` on Base Sepolia).
    pub eip712_name: String,
    /// EIP-712 domain version.
    pub eip712_version: String,
}

/// Why a network or asset cannot be registered or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another network already uses the name or chain id.
    #[error("network {0} is already registered with different parameters")]
    Conflict(String),
    /// The network is not known.
    #[error("unknown network {0}")]
    UnknownNetwork(String),
}

/// v1 name → chain id for every EVM network of the reference SDK (x402.md §4.1).
const BUILTIN_NETWORKS: &[(&str, u64)] = &[
    ("ethereum", 1),
    ("sepolia", 11_155_111),
    ("base", 8453),
    ("base-sepolia", 84_532),
    ("avalanche", 43_114),
    ("avalanche-fuji", 43_113),
    ("polygon", 137),
    ("polygon-amoy", 80_002),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("abstract", 2741),
    ("abstract-testnet", 11_124),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41_923),
    ("skale-base-sepolia", 324_705_682),
    ("megaeth", 4326),
    ("monad", 143),
    ("stable", 988),
    ("stable-testnet", 2201),
];

/// USDC per chain: (chain id, address, EIP-712 name, version) (x402.md §4.2).
const BUILTIN_USDC: &[(u64, &str, &str, &str)] = &[
    (
        8453,
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "USD Coin",
        "2",
    ),
    (
        84_532,
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "USDC",
        "2",
    ),
    (
        43_114,
        "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E",
        "USD Coin",
        "2",
    ),
    (
        43_113,
        "0x5425890298aed601595a70AB815c96711a31Bc65",
        "USD Coin",
        "2",
    ),
    (
        137,
        "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        "USD Coin",
        "2",
    ),
    (
        42_161,
        "0xaf88d065e77c8cC2239327C5EDb3A432268e5831",
        "USD Coin",
        "2",
    ),
    (
        80_002,
        "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582",
        "USDC",
        "2",
    ),
];

/// The networks and assets hb402 can offer.
#[derive(Debug, Clone)]
pub struct Registry {
    networks: Vec<Network>,
    assets: Vec<Asset>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The reference networks and USDC deployments. Arbitrum One has no v1 name.
    pub fn builtin() -> Self {
        let mut networks: Vec<Network> = BUILTIN_NETWORKS
            .iter()
            .map(|&(name, chain_id)| Network {
                v1_name: Some(name.to_owned()),
                chain_id,
            })
            .collect();
        networks.push(Network {
            v1_name: None,
            chain_id: 42_161,
        });
        let assets = BUILTIN_USDC
            .iter()
            .map(|&(chain_id, address, name, version)| Asset {
                chain_id,
                address: address.parse().expect("built-in addresses are valid"),
                decimals: 6,
                symbol: "USDC".to_owned(),
                eip712_name: name.to_owned(),
                eip712_version: version.to_owned(),
            })
            .collect();
        Registry { networks, assets }
    }

    /// Adds a network (e.g. a development chain). Re-adding an identical one is a no-op; a name
    /// or chain id that clashes with a different network is an error.
    pub fn add_network(&mut self, network: Network) -> Result<(), RegistryError> {
        if self.networks.contains(&network) {
            return Ok(());
        }
        let clash = self.networks.iter().any(|n| {
            n.chain_id == network.chain_id
                || (network.v1_name.is_some() && n.v1_name == network.v1_name)
        });
        if clash {
            return Err(RegistryError::Conflict(network.caip2()));
        }
        self.networks.push(network);
        Ok(())
    }

    /// Adds or replaces an asset (same chain and address).
    pub fn add_asset(&mut self, asset: Asset) -> Result<(), RegistryError> {
        if self.network_by_chain(asset.chain_id).is_none() {
            return Err(RegistryError::UnknownNetwork(format!(
                "eip155:{}",
                asset.chain_id
            )));
        }
        self.assets
            .retain(|a| !(a.chain_id == asset.chain_id && a.address == asset.address));
        self.assets.push(asset);
        Ok(())
    }

    /// A network by v1 name (`base-sepolia`) or CAIP-2 id (`eip155:84532`).
    pub fn network(&self, id: &str) -> Option<&Network> {
        if let Some(chain) = id.strip_prefix("eip155:") {
            let chain_id: u64 = chain.parse().ok()?;
            return self.network_by_chain(chain_id);
        }
        self.networks
            .iter()
            .find(|n| n.v1_name.as_deref() == Some(id))
    }

    /// A network by chain id.
    pub fn network_by_chain(&self, chain_id: u64) -> Option<&Network> {
        self.networks.iter().find(|n| n.chain_id == chain_id)
    }

    /// An asset by chain and address.
    pub fn asset(&self, chain_id: u64, address: &Address) -> Option<&Asset> {
        self.assets
            .iter()
            .find(|a| a.chain_id == chain_id && &a.address == address)
    }

    /// The USDC deployment (or the asset whose symbol is `USDC`) on a chain.
    pub fn usdc(&self, chain_id: u64) -> Option<&Asset> {
        self.assets
            .iter()
            .rev()
            .find(|a| a.chain_id == chain_id && a.symbol == "USDC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_caip2_resolve_to_the_same_network() {
        let r = Registry::builtin();
        for &(name, chain) in BUILTIN_NETWORKS {
            let by_name = r.network(name).unwrap();
            assert_eq!(by_name.chain_id, chain);
            assert_eq!(r.network(&format!("eip155:{chain}")), Some(by_name));
        }
        assert_eq!(r.network("eip155:42161").unwrap().v1_name, None);
        assert!(r.network("eip155:31337").is_none());
        assert!(r.network("solana").is_none());
        assert!(r.network("eip155:x").is_none());
    }

    #[test]
    fn base_and_base_sepolia_have_different_domain_names() {
        let r = Registry::builtin();
        assert_eq!(r.usdc(8453).unwrap().eip712_name, "USD Coin");
        assert_eq!(r.usdc(84_532).unwrap().eip712_name, "USDC");
        assert_eq!(r.usdc(84_532).unwrap().eip712_version, "2");
        assert_eq!(r.usdc(84_532).unwrap().decimals, 6);
    }

    #[test]
    fn configured_dev_chain_and_asset() {
        let mut r = Registry::builtin();
        let dev = Network {
            v1_name: Some("anvil".into()),
            chain_id: 31_337,
        };
        r.add_network(dev.clone()).unwrap();
        r.add_network(dev).unwrap();
        assert!(matches!(
            r.add_network(Network {
                v1_name: Some("base".into()),
                chain_id: 1234
            }),
            Err(RegistryError::Conflict(_))
        ));
        let token = Asset {
            chain_id: 31_337,
            address: "0x8A791620dd6260079BF849Dc5567aDC3F2FdC318"
                .parse()
                .unwrap(),
            decimals: 6,
            symbol: "USDC".into(),
            eip712_name: "USD Coin".into(),
            eip712_version: "2".into(),
        };
        r.add_asset(token.clone()).unwrap();
        assert_eq!(r.usdc(31_337), Some(&token));
        assert_eq!(r.network("anvil").unwrap().caip2(), "eip155:31337");
        let orphan = Asset {
            chain_id: 999_999,
            ..token
        };
        assert!(r.add_asset(orphan).is_err());
    }
}
