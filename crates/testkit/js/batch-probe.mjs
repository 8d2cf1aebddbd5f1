// Probe of the x402 `batch-settlement` scheme on the local chain, end to end, with the unmodified
// reference packages: the @x402/evm batch-settlement client (through @x402/fetch), the reference
// resource server (x402ResourceServer from @x402/core with the @x402/evm batch-settlement server
// scheme) and the reference facilitator (x402Facilitator with the @x402/evm batch-settlement
// facilitator scheme), all in this process; the HTTP exchange between client and server is carried
// by an in-process fetch function, the facilitator is called through a JSON round trip.
//
//   node batch-probe.mjs [--dump FILE]
//
// Steps (every wait is bounded; the whole probe gives up after 120 s):
//   1. starts anvil (node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil) on 127.0.0.1, port
//      chosen by the kernel, chain id 84532; runs `chain.mjs setup` and
//      `chain.mjs batch-settlement` against it;
//   2. offers 1000 atomic USDC per request (scheme batch-settlement, eip155:84532, payTo anvil
//      account #2, maxTimeoutSeconds 3600, extra {receiverAuthorizer, withdrawDelay 900,
//      name "USDC", version "2"}); the receiver-authorizer key is a fixed probe key held by the
//      server; the facilitator settles with anvil account #9; the buyer is anvil account #1;
//   3. request 1: the client deposits (ERC-3009 receiveWithAuthorization through the deposit
//      collector) with its first voucher; the facilitator verifies and settles it; the channel's
//      on-chain balance is checked;
//   4. requests 2 and 3: voucher-only payments (cumulative 2000, 3000) that the server accepts
//      without a transaction; each voucher is also verified by the facilitator for the record;
//      request 4 comes from a second client for the same buyer with empty storage: its voucher
//      starts from the on-chain state, the server answers a corrective 402 carrying its channel
//      state and the last voucher, the client checks and adopts it and pays 4000 cumulative;
//   5. the server's channel manager claims the vouchers (facilitator settle, payload type
//      "claim", claimWithSignature signed by the receiver authorizer) and settles them to the
//      receiver (payload type "settle"); the receiver's USDC balance must rise by exactly the
//      claimed total;
//   6. the client asks for a cooperative refund of the rest (payload type "refund"); the server
//      enriches it and the facilitator executes refundWithSignature; the buyer must end down by
//      exactly the claimed total and the settlement contract must hold no USDC;
//   7. kills anvil and prints one JSON summary line. With --dump FILE it also writes every
//      exchange (offer, payloads as sent, facilitator requests and answers, PAYMENT-RESPONSE
//      contents, client and server channel state) to FILE as JSON.
// Exit status 0 when every check passed, 1 otherwise.

import { execFile, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { x402Facilitator } from "@x402/core/facilitator";
import {
  decodePaymentSignatureHeader,
  encodePaymentRequiredHeader,
  encodePaymentResponseHeader,
} from "@x402/core/http";
import { x402ResourceServer } from "@x402/core/server";
import { BATCH_SETTLEMENT_ADDRESS, toClientEvmSigner, toFacilitatorEvmSigner } from "@x402/evm";
import {
  BatchSettlementEvmScheme as BatchClientScheme,
  InMemoryClientChannelStorage,
  computeChannelId,
} from "@x402/evm/batch-settlement/client";
import { BatchSettlementEvmScheme as BatchFacilitatorScheme } from "@x402/evm/batch-settlement/facilitator";
import { BatchSettlementEvmScheme as BatchServerScheme } from "@x402/evm/batch-settlement/server";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import {
  createPublicClient,
  createWalletClient,
  getAddress,
  http,
  keccak256,
  publicActions,
  toBytes,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
  ANVIL_KEYS,
  FAST_POLLING,
  NETWORK_V2,
  USDC,
  USDC_NAME,
  USDC_VERSION,
  fail,
  localChain,
  parseArgs,
  toJson,
} from "./lib.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ANVIL = join(HERE, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
const OVERALL_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 60_000;
const PRICE = "1000";
const RESOURCE_URL = "http://hb402.test/paid";

const args = parseArgs(process.argv.slice(2), { dump: "string" });
if (args._.length) fail(`unexpected argument ${args._[0]}`);

const batchAbi = [
  {
    type: "function",
    name: "channels",
    stateMutability: "view",
    inputs: [{ name: "channelId", type: "bytes32" }],
    outputs: [
      { name: "balance", type: "uint128" },
      { name: "totalClaimed", type: "uint128" },
    ],
  },
];
const balanceOfAbi = [
  {
    type: "function",
    name: "balanceOf",
    stateMutability: "view",
    inputs: [{ name: "account", type: "address" }],
    outputs: [{ name: "", type: "uint256" }],
  },
];

/** Rejects after `ms` with a message naming `what`. */
function bounded(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** JSON round trip (bigints as decimal strings), as on the wire. */
const wire = (value) => JSON.parse(toJson(value));

/** Starts anvil; resolves with {child, rpc} once it prints its listening address. */
function startAnvil() {
  const child = spawn(ANVIL, ["--host", "127.0.0.1", "--port", "0", "--chain-id", "84532"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const listening = new Promise((resolve, reject) => {
    let seen = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      const match = /Listening on (127\.0\.0\.1:\d+)/.exec(seen);
      if (match) resolve(`http://${match[1]}`);
      if (seen.length > 1 << 16) seen = seen.slice(-4096);
    });
    child.on("error", reject);
    child.on("exit", (code, signal) =>
      reject(new Error(`anvil exited (${code ?? signal}) before listening`)),
    );
  });
  child.stderr.resume();
  return { child, listening: bounded(listening, "anvil start", 20_000) };
}

/** Runs `node chain.mjs ...`; resolves with its stdout's JSON line. */
function chainScript(argv) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [join(HERE, "chain.mjs"), ...argv],
      { timeout: STEP_TIMEOUT_MS, maxBuffer: 1 << 20 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`chain.mjs ${argv[0]} failed: ${stderr.trim() || error.message}`));
        else resolve(JSON.parse(stdout.trim()));
      },
    );
  });
}

async function probe(rpc, transcript) {
  transcript.chainSetup = await chainScript(["setup", "--rpc", rpc]);
  transcript.contracts = await chainScript(["batch-settlement", "--rpc", rpc]);
  check(
    getAddress(transcript.contracts.batchSettlement) === getAddress(BATCH_SETTLEMENT_ADDRESS),
    "x402BatchSettlement installed where @x402/evm expects it",
  );

  const chain = localChain(rpc);
  const transport = http(rpc, { retryCount: 0, timeout: 30_000 });
  const publicClient = createPublicClient({ chain, transport, ...FAST_POLLING });
  const buyer = privateKeyToAccount(ANVIL_KEYS[1]);
  const receiver = privateKeyToAccount(ANVIL_KEYS[2]).address;
  const operator = privateKeyToAccount(ANVIL_KEYS[9]);
  const receiverAuthorizer = privateKeyToAccount(
    keccak256(toBytes("hb402 batch-settlement probe receiver authorizer")),
  );
  const usdcBalance = (who) =>
    publicClient.readContract({ address: USDC, abi: balanceOfAbi, functionName: "balanceOf", args: [who] });
  const channelState = (channelId) =>
    publicClient.readContract({
      address: BATCH_SETTLEMENT_ADDRESS,
      abi: batchAbi,
      functionName: "channels",
      args: [channelId],
    });

  // The facilitator: signer adapter as in facilitator.mjs, receipts bounded.
  const operatorClient = createWalletClient({ account: operator, chain, transport, ...FAST_POLLING }).extend(
    publicActions,
  );
  const facilitatorSigner = toFacilitatorEvmSigner(
    {
      address: operator.address,
      getCode: (a) => operatorClient.getCode(a),
      readContract: (a) => operatorClient.readContract({ ...a, args: a.args || [] }),
      verifyTypedData: (a) => operatorClient.verifyTypedData(a),
      writeContract: (a) => operatorClient.writeContract({ ...a, args: a.args || [] }),
      sendTransaction: (a) => operatorClient.sendTransaction(a),
      waitForTransactionReceipt: (a) => operatorClient.waitForTransactionReceipt(a),
    },
    { confirmationTimeoutMs: 30_000 },
  );
  const facilitator = new x402Facilitator().register(
    NETWORK_V2,
    new BatchFacilitatorScheme(facilitatorSigner),
  );
  transcript.facilitatorCalls = [];
  const facilitatorClient = {
    async getSupported() {
      return wire(facilitator.getSupported());
    },
    async verify(paymentPayload, paymentRequirements) {
      const request = wire({ x402Version: paymentPayload.x402Version, paymentPayload, paymentRequirements });
      const { paymentPayload: p, paymentRequirements: r } = request;
      const response = wire(await bounded(facilitator.verify(p, r), "facilitator verify"));
      // A copy: the resource server adds its own fields to the answer it is given.
      transcript.facilitatorCalls.push({ route: "/verify", request, response: wire(response) });
      return response;
    },
    async settle(paymentPayload, paymentRequirements) {
      const request = wire({ x402Version: paymentPayload.x402Version, paymentPayload, paymentRequirements });
      const { paymentPayload: p, paymentRequirements: r } = request;
      const response = wire(await bounded(facilitator.settle(p, r), "facilitator settle"));
      // A copy: the resource server adds its own fields to the answer it is given.
      transcript.facilitatorCalls.push({ route: "/settle", request, response: wire(response) });
      return response;
    },
  };
  transcript.supported = await facilitatorClient.getSupported();

  // The resource server: the reference server scheme holds the receiver-authorizer key.
  const serverScheme = new BatchServerScheme(receiver, {
    receiverAuthorizerSigner: receiverAuthorizer,
    withdrawDelay: 900,
  });
  const resourceServer = new x402ResourceServer(facilitatorClient).register(NETWORK_V2, serverScheme);
  await resourceServer.initialize();
  const offer = {
    scheme: "batch-settlement",
    network: NETWORK_V2,
    asset: USDC,
    amount: PRICE,
    payTo: receiver,
    maxTimeoutSeconds: 3600,
    extra: {
      receiverAuthorizer: receiverAuthorizer.address,
      withdrawDelay: 900,
      name: USDC_NAME,
      version: USDC_VERSION,
    },
  };
  const resource = { url: RESOURCE_URL, description: "batch-settlement probe", mimeType: "application/json" };
  transcript.offer = offer;
  transcript.exchanges = [];

  // What a server does per request, over the reference resource server: 402 without payment;
  // verify, "handler", settle with one; PAYMENT-RESPONSE on success.
  const paymentRequiredResponse = async (error, payload, exchange) => {
    const body = await resourceServer.createPaymentRequiredResponse(
      [offer],
      resource,
      error,
      undefined,
      undefined,
      payload,
    );
    if (exchange) exchange.paymentRequired = wire(body);
    return new Response("{}", {
      status: 402,
      headers: { "content-type": "application/json", "PAYMENT-REQUIRED": encodePaymentRequiredHeader(body) },
    });
  };
  const serverFetch = async (input, init) => {
    const request = new Request(input, init);
    const header = request.headers.get("PAYMENT-SIGNATURE");
    if (!header) return paymentRequiredResponse("Payment required");
    const payload = decodePaymentSignatureHeader(header);
    const exchange = { paymentSignature: wire(payload) };
    transcript.exchanges.push(exchange);
    const requirements = resourceServer.findMatchingRequirements([offer], payload);
    if (!requirements) return paymentRequiredResponse("No matching payment requirements", payload, exchange);
    const verified = await bounded(resourceServer.verifyPayment(payload, requirements), "server verify");
    exchange.serverVerify = wire(verified);
    if (!verified.isValid) return paymentRequiredResponse(verified.invalidReason, payload, exchange);
    let settled;
    try {
      settled = await bounded(resourceServer.settlePayment(payload, requirements), "server settle");
    } catch (error) {
      exchange.settleError = String(error?.message ?? error);
      return paymentRequiredResponse(exchange.settleError, payload, exchange);
    }
    exchange.paymentResponse = wire(settled);
    const headers = {
      "content-type": "application/json",
      "PAYMENT-RESPONSE": encodePaymentResponseHeader(settled),
    };
    if (!settled.success) return new Response("{}", { status: 402, headers });
    const body = verified.skipHandler?.body ?? { paid: requirements.amount };
    return new Response(JSON.stringify(body), { status: 200, headers });
  };

  // The clients: unmodified batch-settlement client scheme behind @x402/fetch, for the same buyer.
  // The second one starts with empty storage, as a client that lost its channel record would.
  const newClient = () => {
    const storage = new InMemoryClientChannelStorage();
    const scheme = new BatchClientScheme(toClientEvmSigner(buyer, publicClient), { storage });
    const fetch = wrapFetchWithPayment(serverFetch, new x402Client().register(NETWORK_V2, scheme));
    return { storage, scheme, fetch };
  };
  const first = newClient();
  const second = newClient();
  const channelConfig = first.scheme.buildChannelConfig(offer);
  const channelId = computeChannelId(channelConfig, NETWORK_V2);
  transcript.channelConfig = channelConfig;
  transcript.channelId = channelId;

  const buyerBefore = await usdcBalance(buyer.address);
  const receiverBefore = await usdcBalance(receiver);
  const txs = {};
  const payments = [];

  // Requests 1-3 from the first client: a deposit, then two voucher-only payments. Request 4
  // from the second client: its voucher starts from the on-chain state (nothing claimed yet), the
  // server answers a corrective 402 with its channel state, the client resyncs and pays again.
  transcript.requests = [];
  const steps = [first, first, first, second];
  for (const [index, who] of steps.entries()) {
    const n = index + 1;
    const start = transcript.exchanges.length;
    const response = await bounded(who.fetch(RESOURCE_URL), `paid request ${n}`);
    check(response.status === 200, `request ${n} answered ${response.status}`);
    const exchanges = transcript.exchanges.slice(start);
    const last = exchanges.at(-1);
    const record = {
      request: n,
      client: who === first ? "first" : "second",
      exchanges: exchanges.length,
      status: response.status,
      body: await response.json(),
      clientState: wire(await who.storage.get(channelId)),
      serverState: wire(await serverScheme.getStorage().get(channelId)),
    };
    transcript.requests.push(record);
    const type = last.paymentSignature.payload.type;
    const tag = (e) => `${e.paymentSignature.payload.type}${e.paymentRequired ? "(402)" : ""}`;
    payments.push(exchanges.map(tag).join("+"));
    const cumulative = String(BigInt(PRICE) * BigInt(n));
    if (n === 1) {
      check(exchanges.length === 1 && type === "deposit", `first payment is a deposit (got ${type})`);
      txs.deposit = last.paymentResponse.transaction;
      const [balance, totalClaimed] = await channelState(channelId);
      const deposited = BigInt(last.paymentSignature.payload.deposit.amount);
      check(
        balance === deposited && totalClaimed === 0n,
        `channel holds the deposit (${balance}, ${totalClaimed})`,
      );
      record.onchain = { balance, totalClaimed };
    } else {
      check(type === "voucher", `payment ${n} is a voucher (got ${type})`);
      // For the record: the facilitator's own verdict on the voucher (the server accepted it
      // from its mirrored channel state).
      record.facilitatorVerify = await facilitatorClient.verify(last.paymentSignature, offer);
      check(record.facilitatorVerify.isValid, `facilitator accepts voucher ${n}`);
    }
    if (n === 4) {
      check(
        exchanges.length === 2 &&
          exchanges[0].paymentRequired?.error === "invalid_batch_settlement_evm_cumulative_amount_mismatch",
        "the second client got a corrective 402 first",
      );
    }
    const signed = last.paymentSignature.payload.voucher.maxClaimableAmount;
    check(signed === cumulative, `voucher ${n} is cumulative (${signed})`);
    check(record.clientState?.chargedCumulativeAmount === cumulative, `client state after request ${n}`);
    check(record.serverState?.chargedCumulativeAmount === cumulative, `server state after request ${n}`);
  }

  // Claim and settle through the server's channel manager.
  const manager = serverScheme.createChannelManager(facilitatorClient, NETWORK_V2, USDC);
  const claims = await bounded(manager.claim(), "claim");
  check(claims.length === 1 && claims[0].vouchers === 1, `one claim batch (${toJson(claims)})`);
  txs.claim = claims[0].transaction;
  const claimed = BigInt(PRICE) * BigInt(steps.length);
  const [balanceAfterClaim, totalClaimed] = await channelState(channelId);
  check(totalClaimed === claimed, `channel totalClaimed ${totalClaimed}, expected ${claimed}`);
  const settled = await bounded(manager.settle(), "settle");
  txs.settle = settled.transaction;
  const receiverDelta = (await usdcBalance(receiver)) - receiverBefore;
  check(receiverDelta === claimed, `receiver gained ${receiverDelta}, expected ${claimed}`);

  // Cooperative refund of the unclaimed rest, asked for by the (up to date) second client.
  const refund = await bounded(second.scheme.refund(RESOURCE_URL, { fetch: serverFetch }), "refund");
  check(refund.success, `refund succeeded (${toJson(refund)})`);
  txs.refund = refund.transaction;
  transcript.refundResult = wire(refund);
  transcript.clientStateAfterRefund = wire((await second.storage.get(channelId)) ?? null);
  transcript.serverStateAfterRefund = wire((await serverScheme.getStorage().get(channelId)) ?? null);
  const [finalBalance, finalClaimed] = await channelState(channelId);
  const buyerDelta = (await usdcBalance(buyer.address)) - buyerBefore;
  const contractHolds = await usdcBalance(BATCH_SETTLEMENT_ADDRESS);
  check(buyerDelta === -claimed, `buyer changed by ${buyerDelta}, expected -${claimed}`);
  check(contractHolds === 0n, `settlement contract still holds ${contractHolds}`);

  return {
    ok: true,
    contracts: transcript.contracts,
    channelId,
    receiverAuthorizer: receiverAuthorizer.address,
    payments,
    deposit: transcript.exchanges[0].paymentSignature.payload.deposit.amount,
    channelAfterClaim: { balance: balanceAfterClaim, totalClaimed },
    claimed,
    receiverDelta,
    refunded: refund.amount,
    buyerDelta,
    channelFinal: { balance: finalBalance, totalClaimed: finalClaimed },
    txs,
  };
}

const transcript = {};
const { child: anvil, listening } = startAnvil();
const watchdog = setTimeout(() => {
  process.stderr.write(`error: the probe did not finish within ${OVERALL_TIMEOUT_MS} ms\n`);
  anvil.kill("SIGKILL");
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
let status = 0;
try {
  const rpc = await listening;
  const summary = await probe(rpc, transcript);
  process.stdout.write(`${toJson(summary)}\n`);
} catch (error) {
  status = 1;
  process.stderr.write(`error: ${error?.stack ?? error}\n`);
  process.stdout.write(`${toJson({ ok: false, error: String(error?.message ?? error) })}\n`);
} finally {
  clearTimeout(watchdog);
  if (anvil.exitCode === null && anvil.signalCode === null) {
    const exited = new Promise((resolve) => anvil.once("exit", resolve));
    anvil.kill("SIGTERM");
    await bounded(exited, "anvil shutdown", 5_000).catch(() => anvil.kill("SIGKILL"));
  }
  if (args.dump) writeFileSync(args.dump, `${JSON.stringify(wire(transcript), null, 2)}\n`);
}
process.exit(status);
