// Shared helpers of the hb402 test kit scripts: argument parsing, the local chain definition and
// the well-known constants of the offline x402 setup (Base Sepolia's chain id and USDC address on
// a local anvil).

import { webcrypto } from "node:crypto";
import { defineChain } from "viem";

// Node 18 has no global WebCrypto in modules, and @x402/evm draws its nonces from
// `globalThis.crypto`. Every script imports this module, so the clients work there unmodified.
if (globalThis.crypto === undefined) globalThis.crypto = webcrypto;

/** Base Sepolia's chain id; the local anvil runs with it so unmodified clients pay there. */
export const CHAIN_ID = 84532;
/** CAIP-2 name of the local chain (x402 v2). */
export const NETWORK_V2 = "eip155:84532";
/** v1 network name of the same chain. */
export const NETWORK_V1 = "base-sepolia";
/** Base Sepolia USDC address; the local FiatTokenV2_2 is installed here. */
export const USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
/** EIP-712 domain name and version of USDC on Base Sepolia. */
export const USDC_NAME = "USDC";
export const USDC_VERSION = "2";
/** DOMAIN_SEPARATOR of that token at that address on chain 84532. */
export const DOMAIN_SEPARATOR = "0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818";

/** anvil's well-known test accounts (public keys of the default mnemonic, never real funds). */
export const ANVIL_KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
  "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
  "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
  "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
  "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
  "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/** The local chain as viem sees it. */
export function localChain(rpc) {
  return defineChain({
    id: CHAIN_ID,
    name: "Base Sepolia (local anvil)",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpc] } },
    testnet: true,
  });
}

/**
 * Client options for a local automining chain: poll quickly (viem's default of several seconds
 * would dominate every receipt wait) and never serve a cached block number.
 */
export const FAST_POLLING = { pollingInterval: 50, cacheTime: 0 };

/**
 * Parses `--name value` pairs and `--flag` switches. `spec` maps each accepted option to
 * "string", "list" (repeatable) or "bool". Positional arguments land in `_`.
 */
export function parseArgs(argv, spec) {
  const out = { _: [] };
  for (const [name, kind] of Object.entries(spec)) {
    if (kind === "list") out[name] = [];
    if (kind === "bool") out[name] = false;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      out._.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const kind = spec[name];
    if (kind === undefined) fail(`unknown option --${name}`);
    if (kind === "bool") {
      out[name] = true;
      continue;
    }
    let value;
    if (eq !== -1) value = arg.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    else fail(`option --${name} needs a value`);
    if (kind === "list") out[name].push(value);
    else out[name] = value;
  }
  return out;
}

/** Prints an error to stderr and exits with status 2. */
export function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

/** JSON.stringify that writes bigints as decimal strings. */
export function toJson(value) {
  return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? v.toString() : v));
}
