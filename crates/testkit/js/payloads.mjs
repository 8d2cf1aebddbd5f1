// x402 payment payload fixtures made by the unmodified reference clients, without any server.
//
//   node payloads.mjs [--requirements FILE] [--key 0xPRIVKEY] [--now UNIX_SECONDS]
//                     [--no-spend-controls] [--out FILE]
//
// For one offer, in its v2 and v1 forms, prints (or writes to FILE, pretty-printed) a JSON object:
//   {"now": …, "signer": …, "clients": {package: version},
//    "v2":     {"paymentRequired", "requirements", "payload", "header"},
//    "v1":     {"paymentRequirementsResponse", "requirements", "payload", "header"},
//    "v1core": {"paymentRequirementsResponse", "requirements", "payload", "header"}}
// where
//   v2     is what `x402Client` (@x402/core) with @x402/evm's `exact` client scheme creates,
//   v1     is what legacy `x402` creates with `createPaymentHeader` (what x402-fetch sends),
//   v1core is what the same `x402Client` creates for the v1 offer (what @x402/fetch sends to a
//          v1 server),
// `header` is the client's own base64 encoding (the PAYMENT-SIGNATURE / X-PAYMENT value), and
// `now` is the clock the clients saw (`--now` pins it; default: the system clock). Payloads
// carry validBefore = now + maxTimeoutSeconds, so tests that check them later must inject `now`.
//
// The default signer is anvil account #1. The default offer: exact, eip155:84532 / base-sepolia,
// Base Sepolia USDC, 10000 atomic units (0.01 USDC) to anvil account #2, maxTimeoutSeconds 300,
// extra {name: "USDC", version: "2"}, resource http://127.0.0.1:8402/resolve/some-id.
// `--requirements FILE` (`-` for stdin) reads {"v2": PaymentRequirements, "v1": PaymentRequirementsV1,
// "resource": {url, description, mimeType}}; any key left out keeps its default.
// `--no-spend-controls` lifts @x402/core's default spend controls (needed only for assets other
// than the known USDC deployments or amounts above 1 USD).

import { readFileSync, writeFileSync } from "node:fs";
import { x402Client } from "@x402/core/client";
import { encodePaymentSignatureHeader } from "@x402/core/http";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { createPaymentHeader } from "x402/client";
import { createSigner } from "x402/types";
import { ANVIL_KEYS, NETWORK_V1, NETWORK_V2, USDC, USDC_NAME, USDC_VERSION, fail, parseArgs } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2), {
  requirements: "string",
  key: "string",
  now: "string",
  "no-spend-controls": "bool",
  out: "string",
});
if (args._.length) fail(`unexpected argument ${args._[0]}`);

const key = args.key ?? ANVIL_KEYS[1];
if (!/^0x[0-9a-fA-F]{64}$/.test(key)) fail("--key must be 0x followed by 64 hex digits");

// The clients read the clock through Date.now(); pinning it keeps them unmodified.
let now = Math.floor(Date.now() / 1000);
if (args.now !== undefined) {
  now = Number(args.now);
  if (!Number.isSafeInteger(now) || now <= 0) fail(`bad --now ${args.now}`);
  Date.now = () => now * 1000;
}

const resource = {
  url: "http://127.0.0.1:8402/resolve/some-id",
  description: "hb402 test resource",
  mimeType: "application/octet-stream",
};
const offer = {
  amount: "10000",
  payTo: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
  maxTimeoutSeconds: 300,
  extra: { name: USDC_NAME, version: USDC_VERSION },
};
let v2Requirements = {
  scheme: "exact",
  network: NETWORK_V2,
  amount: offer.amount,
  asset: USDC,
  payTo: offer.payTo,
  maxTimeoutSeconds: offer.maxTimeoutSeconds,
  extra: offer.extra,
};
let v1Requirements = {
  scheme: "exact",
  network: NETWORK_V1,
  maxAmountRequired: offer.amount,
  resource: resource.url,
  description: resource.description,
  mimeType: resource.mimeType,
  payTo: offer.payTo,
  maxTimeoutSeconds: offer.maxTimeoutSeconds,
  asset: USDC,
  extra: offer.extra,
};
let resourceInfo = resource;
if (args.requirements) {
  let file;
  try {
    const source = args.requirements === "-" ? 0 : args.requirements;
    file = JSON.parse(readFileSync(source, "utf8"));
  } catch (error) {
    fail(`cannot read ${args.requirements}: ${error.message}`);
  }
  v2Requirements = file.v2 ?? v2Requirements;
  v1Requirements = file.v1 ?? v1Requirements;
  resourceInfo = file.resource ?? resourceInfo;
}

function decodeHeader(header) {
  return JSON.parse(Buffer.from(header, "base64").toString("utf8"));
}

async function main() {
  const account = privateKeyToAccount(key);

  // v2 and v1 through @x402/core's client with @x402/evm's exact scheme (default registration:
  // eip155:* for v2 plus every known v1 EVM network).
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  if (args["no-spend-controls"]) client.setSpendControls(false);

  const paymentRequired = {
    x402Version: 2,
    error: "Payment required",
    resource: resourceInfo,
    accepts: [v2Requirements],
  };
  const v2Payload = await client.createPaymentPayload(paymentRequired);

  const v1Response = { x402Version: 1, error: "X-PAYMENT header is required", accepts: [v1Requirements] };
  const v1CorePayload = await client.createPaymentPayload(v1Response);

  // v1 through legacy x402 (a local signing wallet; nothing is sent over the network).
  const legacySigner = await createSigner(v1Requirements.network, key);
  const v1Header = await createPaymentHeader(legacySigner, 1, v1Requirements);

  const version = (name) =>
    JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
  return {
    now,
    signer: account.address,
    clients: Object.fromEntries(["@x402/core", "@x402/evm", "x402", "viem"].map((n) => [n, version(n)])),
    v2: {
      paymentRequired,
      requirements: v2Requirements,
      payload: v2Payload,
      header: encodePaymentSignatureHeader(v2Payload),
    },
    v1: {
      paymentRequirementsResponse: v1Response,
      requirements: v1Requirements,
      payload: decodeHeader(v1Header),
      header: v1Header,
    },
    v1core: {
      paymentRequirementsResponse: v1Response,
      requirements: v1Requirements,
      payload: v1CorePayload,
      header: encodePaymentSignatureHeader(v1CorePayload),
    },
  };
}

try {
  const fixtures = await main();
  if (args.out) writeFileSync(args.out, `${JSON.stringify(fixtures, null, 2)}\n`);
  else process.stdout.write(`${JSON.stringify(fixtures)}\n`);
} catch (error) {
  process.stderr.write(`error: ${error?.stack ?? error}\n`);
  process.exit(1);
}
