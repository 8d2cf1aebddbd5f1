// The x402 batch-settlement contracts on the local chain: compiles the sources kept in
// ../contracts/x402 (x402BatchSettlement and its deposit collectors) with solc-js and
// OpenZeppelin Contracts from node_modules, with the settings of the canonical build, and
// installs them at their canonical addresses through the deterministic CREATE2 deployer, as on
// public chains. Unmodified batch-settlement clients and facilitators (which have those addresses
// built in) then work against the local anvil.
//
//   compileBatchSettlement()       -> {x402BatchSettlement, ERC3009DepositCollector,
//                                      Permit2DepositCollector}: creation bytecode (0x hex)
//   deployBatchSettlement({rpc})   -> {batchSettlement, erc3009DepositCollector,
//                                      permit2DepositCollector, deployed: [names]}
//
// The compiler output is cached in node_modules/.cache/hb402-contracts/, keyed by a hash of the
// sources, the compiler settings and the compiler and OpenZeppelin versions (about 2 s saved per
// run; delete the folder to rebuild). The CREATE2 address depends on the exact creation code, so
// a deployment that lands on the canonical address is the canonical bytecode.
//
// Permit2DepositCollector is installed too (it is cheap and its constructor only stores the
// Permit2 address), but Permit2 itself is not on the local chain: deposits go through the
// ERC-3009 collector (USDC's receiveWithAuthorization).

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import {
  concat,
  createWalletClient,
  encodeAbiParameters,
  getAddress,
  getContractAddress,
  http,
  publicActions,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { ANVIL_KEYS, CHAIN_ID, FAST_POLLING, localChain } from "./lib.mjs";

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));
const SOURCES = join(HERE, "..", "contracts", "x402");
const CACHE = join(HERE, "node_modules", ".cache", "hb402-contracts");

/** Arachnid's deterministic deployer: calldata is salt (32 bytes) ++ creation code. */
export const CREATE2_DEPLOYER = "0x4e59b44847b379578588920cA78FbF26c0B4956C";
/** Uniswap's Permit2, the second constructor argument of Permit2DepositCollector. */
export const PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3";
export const BATCH_SETTLEMENT = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003";
export const ERC3009_DEPOSIT_COLLECTOR = "0x4020806089470a89826cB9fB1f4059150b550004";
export const PERMIT2_DEPOSIT_COLLECTOR = "0x4020425FAf3B746C082C2f942b4E5159887B0005";

// The CREATE2 salts of the canonical deployment (contracts/evm/script/DeployBatchSettlement.s.sol
// in the x402 repository).
const BATCH_SALT = "0x000000000000000000000000000000000000000000000000e000000005be885c";
const ERC3009_SALT = "0x0000000000000000000000000000000000000000000000001800000007a95284";
const PERMIT2_COLLECTOR_SALT = "0x000000000000000000000000000000000000000000000000f800000001a5d4ff";

// The settings of the canonical build: cancun, optimizer at 200 runs, no CBOR metadata.
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { appendCBOR: false, bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["evm.bytecode.object"] } },
};

// Contract name -> source unit that defines it.
const CONTRACTS = {
  x402BatchSettlement: "src/x402BatchSettlement.sol",
  ERC3009DepositCollector: "src/periphery/ERC3009DepositCollector.sol",
  Permit2DepositCollector: "src/periphery/Permit2DepositCollector.sol",
};

/** Every .sol file under `dir`, as {unit name relative to SOURCES: content}, sorted by name. */
function readSources(dir, out = {}) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) readSources(path, out);
    else if (entry.name.endsWith(".sol")) {
      out[relative(SOURCES, path).split(sep).join("/")] = readFileSync(path, "utf8");
    }
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

function packageVersion(name) {
  return JSON.parse(readFileSync(require.resolve(`${name}/package.json`), "utf8")).version;
}

/** A wallet client of anvil account #0 (which deploys) on the chain at `rpc`. */
function deployer(rpc) {
  return createWalletClient({
    account: privateKeyToAccount(ANVIL_KEYS[0]),
    chain: localChain(rpc),
    transport: http(rpc, { retryCount: 0, timeout: 30_000 }),
    ...FAST_POLLING,
  }).extend(publicActions);
}

/** Resolves `@openzeppelin/contracts/...` imports from node_modules. */
function findImports(path) {
  if (!path.startsWith("@openzeppelin/contracts/")) return { error: `import not found: ${path}` };
  try {
    return { contents: readFileSync(require.resolve(path), "utf8") };
  } catch (error) {
    return { error: `import not found: ${path} (${error.message})` };
  }
}

/**
 * Compiles the vendored batch-settlement sources (standard JSON, canonical settings) and returns
 * the creation bytecode of each deployable contract. Throws on any compiler error.
 */
export async function compileBatchSettlement() {
  const sources = readSources(join(SOURCES, "src"));
  const versions = {
    solc: packageVersion("solc"),
    openzeppelin: packageVersion("@openzeppelin/contracts"),
  };
  const key = createHash("sha256")
    .update(JSON.stringify({ sources, settings: SETTINGS, versions }))
    .digest("hex")
    .slice(0, 32);
  const cached = join(CACHE, `${key}.json`);
  try {
    return JSON.parse(readFileSync(cached, "utf8"));
  } catch {
    // not cached yet (or unreadable): compile below
  }

  const solc = require("solc");
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(Object.entries(sources).map(([name, content]) => [name, { content }])),
    settings: SETTINGS,
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length) {
    throw new Error(
      `solc ${solc.version()} failed:\n${errors.map((e) => e.formattedMessage ?? e.message).join("\n")}`,
    );
  }
  const bytecode = {};
  for (const [name, unit] of Object.entries(CONTRACTS)) {
    const object = output.contracts?.[unit]?.[name]?.evm?.bytecode?.object;
    if (!object) throw new Error(`solc produced no bytecode for ${name} (${unit})`);
    if (/__\$/.test(object)) throw new Error(`${name} needs library linking`);
    bytecode[name] = `0x${object}`;
  }

  mkdirSync(CACHE, { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(bytecode));
  renameSync(tmp, cached);
  return bytecode;
}

/**
 * CREATE2-deploys, from anvil account #0 through the deterministic deployer, whichever of the
 * batch-settlement contracts is missing at its canonical address; checks that code is present at
 * every canonical address afterwards. Fails if the compiled code would land elsewhere.
 */
export async function deployBatchSettlement({ rpc }) {
  const bytecode = await compileBatchSettlement();
  const wallet = deployer(rpc);
  const chainId = await wallet.getChainId();
  if (chainId !== CHAIN_ID) {
    throw new Error(`the chain at ${rpc} has id ${chainId}; start anvil with --chain-id ${CHAIN_ID}`);
  }
  const hasCode = async (address) => {
    const code = await wallet.getCode({ address });
    return code !== undefined && code !== "0x";
  };
  if (!(await hasCode(CREATE2_DEPLOYER))) {
    throw new Error(`no deterministic deployer at ${CREATE2_DEPLOYER} (anvil has it unless disabled)`);
  }

  const plan = [
    { name: "x402BatchSettlement", salt: BATCH_SALT, expected: BATCH_SETTLEMENT, args: "0x" },
    {
      name: "ERC3009DepositCollector",
      salt: ERC3009_SALT,
      expected: ERC3009_DEPOSIT_COLLECTOR,
      args: encodeAbiParameters([{ type: "address" }], [BATCH_SETTLEMENT]),
    },
    {
      name: "Permit2DepositCollector",
      salt: PERMIT2_COLLECTOR_SALT,
      expected: PERMIT2_DEPOSIT_COLLECTOR,
      args: encodeAbiParameters([{ type: "address" }, { type: "address" }], [BATCH_SETTLEMENT, PERMIT2]),
    },
  ];

  const deployed = [];
  for (const { name, salt, expected, args } of plan) {
    const initCode = concat([bytecode[name], args]);
    const address = getContractAddress({
      opcode: "CREATE2",
      from: CREATE2_DEPLOYER,
      salt,
      bytecode: initCode,
    });
    if (getAddress(address) !== getAddress(expected)) {
      throw new Error(
        `${name} compiles to code that CREATE2 would place at ${address}, not at the canonical ` +
          `${expected}: the compiler output differs from the canonical build`,
      );
    }
    if (await hasCode(expected)) continue;
    const hash = await wallet.sendTransaction({ to: CREATE2_DEPLOYER, data: concat([salt, initCode]) });
    const receipt = await wallet.waitForTransactionReceipt({ hash, timeout: 30_000 });
    if (receipt.status !== "success") throw new Error(`${name} deployment reverted (tx ${hash})`);
    if (!(await hasCode(expected))) {
      throw new Error(`${name} deployment succeeded (tx ${hash}) but ${expected} has no code`);
    }
    deployed.push(name);
  }

  return {
    batchSettlement: BATCH_SETTLEMENT,
    erc3009DepositCollector: ERC3009_DEPOSIT_COLLECTOR,
    permit2DepositCollector: PERMIT2_DEPOSIT_COLLECTOR,
    deployed,
  };
}

const WALLET = join(HERE, "..", "contracts", "wallet", "OwnedWallet.sol");

/**
 * Deploys (from anvil account #0) a contract account that accepts what `owner` signs (EIP-1271,
 * ../contracts/wallet/OwnedWallet.sol); returns its address.
 */
export async function deployOwnedWallet({ rpc, owner }) {
  const solc = require("solc");
  const input = {
    language: "Solidity",
    sources: { "OwnedWallet.sol": { content: readFileSync(WALLET, "utf8") } },
    settings: { ...SETTINGS, outputSelection: { "*": { "*": ["evm.bytecode.object"] } } },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length) {
    throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage ?? e.message).join("\n")}`);
  }
  const code = `0x${output.contracts["OwnedWallet.sol"].OwnedWallet.evm.bytecode.object}`;
  const wallet = deployer(rpc);
  const hash = await wallet.sendTransaction({
    data: concat([code, encodeAbiParameters([{ type: "address" }], [getAddress(owner)])]),
  });
  const receipt = await wallet.waitForTransactionReceipt({ hash, timeout: 30_000 });
  if (receipt.status !== "success" || !receipt.contractAddress) {
    throw new Error(`OwnedWallet deployment failed (tx ${hash})`);
  }
  return getAddress(receipt.contractAddress);
}
