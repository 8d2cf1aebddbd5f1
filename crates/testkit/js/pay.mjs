// Pays for one GET (or one POST of a file) with an unmodified x402 client wrapper, the way an
// application would.
//
//   node pay.mjs --client fetch|legacy --key 0xPRIVKEY [--max-value ATOMIC] [--data-file PATH] URL
//
// --client fetch   `wrapFetchWithPayment(fetch, x402Client)` from @x402/fetch 2.x, with @x402/evm's
//                  exact scheme registered for eip155:84532 (v2) and base-sepolia (v1) and the
//                  client's default spend controls (Base Sepolia USDC is a default asset, at most
//                  $1 per payment). --max-value adds a policy that drops offers above ATOMIC units.
// --client legacy  `wrapFetchWithPayment(fetch, walletClient, maxValue)` from x402-fetch 1.x, with a
//                  viem wallet client on baseSepolia (chain id 84532 → network base-sepolia). The
//                  legacy client only signs, so the wallet's transport refuses every RPC call.
//                  --max-value is its maxValue (default: the package's own, 0.1 USDC).
//
// Prints one JSON line on stdout:
//   {"status", "headers": {lower-case name: value}, "body_base64",
//    "payment_response": <decoded PAYMENT-RESPONSE or X-PAYMENT-RESPONSE JSON, or null>}
// and exits 0 whatever the status (the caller asserts). If the client throws, prints
// {"error": message} and exits 1; bad arguments exit 2.

import { readFileSync } from "node:fs";
import { NETWORK_V2, fail, parseArgs } from "./lib.mjs";
import { wrapFetchWithPayment as wrapFetchV2, x402Client } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { createWalletClient, custom } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { wrapFetchWithPayment as wrapFetchLegacy } from "x402-fetch";

const args = parseArgs(process.argv.slice(2), {
  client: "string",
  key: "string",
  "max-value": "string",
  "data-file": "string",
});
if (args._.length !== 1) fail("expected exactly one URL");
const [url] = args._;
if (!["fetch", "legacy"].includes(args.client)) fail("--client must be fetch or legacy");
if (!/^0x[0-9a-fA-F]{64}$/.test(args.key ?? "")) fail("--key must be 0x followed by 64 hex digits");
let maxValue;
if (args["max-value"] !== undefined) {
  if (!/^[0-9]+$/.test(args["max-value"])) fail("--max-value must be a decimal integer");
  maxValue = BigInt(args["max-value"]);
}

const account = privateKeyToAccount(args.key);

function fetchClient() {
  const client = new x402Client();
  // networks: [eip155:84532] registers the v2 scheme there and the v1 scheme for every v1
  // network on that chain id, i.e. base-sepolia.
  registerExactEvmScheme(client, { signer: account, networks: [NETWORK_V2] });
  if (maxValue !== undefined) {
    client.registerPolicy((_version, requirements) =>
      requirements.filter((r) => BigInt(r.amount ?? r.maxAmountRequired) <= maxValue),
    );
  }
  return wrapFetchV2(fetch, client);
}

function legacyClient() {
  const wallet = createWalletClient({
    account,
    chain: baseSepolia,
    transport: custom({
      async request({ method }) {
        throw new Error(`the legacy x402 client made an RPC call (${method}); it should only sign`);
      },
    }),
  });
  return maxValue === undefined ? wrapFetchLegacy(fetch, wallet) : wrapFetchLegacy(fetch, wallet, maxValue);
}

function decodeSettlement(value) {
  if (value === null) return null;
  try {
    return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
  } catch {
    return null;
  }
}

try {
  const pay = args.client === "fetch" ? fetchClient() : legacyClient();
  const init =
    args["data-file"] === undefined
      ? { method: "GET" }
      : { method: "POST", body: readFileSync(args["data-file"]) };
  const response = await pay(url, init);
  const body = Buffer.from(await response.arrayBuffer());
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name.toLowerCase()] = value;
  });
  const settlement = response.headers.get("payment-response") ?? response.headers.get("x-payment-response");
  process.stdout.write(
    `${JSON.stringify({
      status: response.status,
      headers,
      body_base64: body.toString("base64"),
      payment_response: decodeSettlement(settlement),
    })}\n`,
  );
} catch (error) {
  const cause = error?.cause ? `: ${error.cause?.message ?? error.cause}` : "";
  process.stdout.write(`${JSON.stringify({ error: `${error?.message ?? error}${cause}` })}\n`);
  process.exit(1);
}
