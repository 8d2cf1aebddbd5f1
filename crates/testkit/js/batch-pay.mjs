// Reads URLs in order with the unmodified x402 batch-settlement client (@x402/evm's
// `BatchSettlementEvmScheme` behind `wrapFetchWithPayment` from @x402/fetch), the way an agent
// would, then optionally asks for a cooperative refund of its channel.
//
//   node batch-pay.mjs --key 0xPRIVKEY --rpc URL [--urls-file PATH] [--refund URL]
//                      [--exact-too] [URL...]
//
// --urls-file  one URL per line (read after the URL arguments)
// --refund     after the reads, `scheme.refund(URL)` (the client's cooperative refund)
// --exact-too  register the exact scheme as well (the client then picks among both)
//
// Prints one JSON line on stdout:
//   {"reads": [{"status", "length", "sha256"}], "payloads": {type: count}, "corrected": n,
//    "charged": "<sum of chargedAmount>", "deposits": [{"amount", "transaction"}],
//    "schemes": {scheme: count}, "channelId", "refund": <settle response or null>,
//    "refundError": <message or null>}
// and exits 0 (the caller asserts). Bad arguments exit 2; a client that throws exits 1 with
// {"error": message}.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { toClientEvmSigner } from "@x402/evm";
import {
  BatchSettlementEvmScheme,
  InMemoryClientChannelStorage,
} from "@x402/evm/batch-settlement/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { createPublicClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { FAST_POLLING, NETWORK_V2, fail, localChain, parseArgs, toJson } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2), {
  key: "string",
  rpc: "string",
  "urls-file": "string",
  refund: "string",
  "exact-too": "bool",
});
if (!/^0x[0-9a-fA-F]{64}$/.test(args.key ?? "")) fail("--key must be 0x followed by 64 hex digits");
if (!args.rpc) fail("--rpc is required");
const urls = [...args._];
if (args["urls-file"]) {
  urls.push(...readFileSync(args["urls-file"], "utf8").split("\n").filter((line) => line.trim()));
}

const decode = (value) => JSON.parse(Buffer.from(value, "base64").toString("utf8"));

const account = privateKeyToAccount(args.key);
const publicClient = createPublicClient({ chain: localChain(args.rpc), transport: http(args.rpc), ...FAST_POLLING });
const storage = new InMemoryClientChannelStorage();
const scheme = new BatchSettlementEvmScheme(toClientEvmSigner(account, publicClient), { storage });
const client = new x402Client().register(NETWORK_V2, scheme);
if (args["exact-too"]) registerExactEvmScheme(client, { signer: account, networks: [NETWORK_V2] });

// What went over the wire, seen from under the client's wrapper.
const seen = { payloads: {}, schemes: {}, corrected: 0, charged: 0n, deposits: [], channelId: null };
async function observedFetch(input, init) {
  const request = new Request(input, init);
  const signature = request.headers.get("payment-signature");
  if (signature) {
    const payment = decode(signature);
    const type = payment.payload?.type ?? "exact";
    seen.payloads[type] = (seen.payloads[type] ?? 0) + 1;
    seen.schemes[payment.accepted?.scheme] = (seen.schemes[payment.accepted?.scheme] ?? 0) + 1;
    seen.channelId ??= payment.payload?.voucher?.channelId ?? null;
  }
  const response = await fetch(request);
  const required = response.headers.get("payment-required");
  if (response.status === 402 && required && signature) {
    if (decode(required).error?.endsWith("_cumulative_amount_mismatch")) seen.corrected += 1;
  }
  const settled = response.headers.get("payment-response");
  if (settled && response.status !== 402) {
    const answer = decode(settled);
    if (answer.extra?.chargedAmount) seen.charged += BigInt(answer.extra.chargedAmount);
    if (signature && decode(signature).payload?.type === "deposit") {
      seen.deposits.push({ amount: answer.amount, transaction: answer.transaction });
    }
  }
  return response;
}

const paying = wrapFetchWithPayment(observedFetch, client);
const reads = [];
try {
  for (const url of urls) {
    const response = await paying(url);
    const body = Buffer.from(await response.arrayBuffer());
    reads.push({
      status: response.status,
      length: body.length,
      sha256: createHash("sha256").update(body).digest("hex"),
    });
  }
} catch (error) {
  console.log(toJson({ error: String(error?.message ?? error), reads: reads.length }));
  process.exit(1);
}

let refund = null;
let refundError = null;
if (args.refund) {
  try {
    refund = await scheme.refund(args.refund, { fetch: observedFetch });
  } catch (error) {
    refundError = String(error?.message ?? error);
  }
}

console.log(
  toJson({
    reads,
    payloads: seen.payloads,
    schemes: seen.schemes,
    corrected: seen.corrected,
    charged: seen.charged.toString(),
    deposits: seen.deposits,
    channelId: seen.channelId,
    refund,
    refundError,
  }),
);
