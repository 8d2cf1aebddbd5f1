// The TypeScript reference x402 facilitator (`x402Facilitator` from @x402/core with the EVM
// `exact` scheme of @x402/evm, unmodified) behind a small node:http server, for the local chain.
//
//   node facilitator.mjs --rpc URL --key 0xPRIVKEY [--port 0] [--confirmation-timeout-ms MS]
//
// Serves on 127.0.0.1 only. The first stdout line is `listening on http://127.0.0.1:PORT`.
// Routes:
//   POST /verify    {x402Version, paymentPayload, paymentRequirements} -> VerifyResponse
//   POST /settle    same body                                          -> SettleResponse
//   GET  /supported                                                    -> {kinds, extensions, signers}
//   GET  /health                                                       -> {"status":"ok"}
// Status codes follow the reference example facilitator (examples/typescript/facilitator/basic
// in the x402 repository): 200 with the facilitator's answer whether or not the payment is
// valid or settled; 400 {"error"} when paymentPayload or paymentRequirements is missing (here also
// for a body that is not JSON); 500 {"error"} when the facilitator throws; a settle aborted by a
// hook answers 200 {success:false, errorReason, network}. Each request is logged to stderr.
//
// Registered kinds: v2 `exact` and `batch-settlement` on eip155:84532 and v1 `exact` on
// base-sepolia, all settled by the given key over the RPC (`batch-settlement` needs the
// contracts `node chain.mjs batch-settlement` deploys).

import { createServer } from "node:http";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/facilitator";
import { ExactEvmScheme } from "@x402/evm/exact/facilitator";
import { ExactEvmSchemeV1 } from "@x402/evm/exact/v1/facilitator";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { FAST_POLLING, NETWORK_V1, NETWORK_V2, fail, localChain, parseArgs, toJson } from "./lib.mjs";

const MAX_BODY = 1 << 20;

const args = parseArgs(process.argv.slice(2), {
  rpc: "string",
  key: "string",
  port: "string",
  "confirmation-timeout-ms": "string",
});
if (!args.rpc) fail("--rpc URL is required");
if (!args.key || !/^0x[0-9a-fA-F]{64}$/.test(args.key)) fail("--key 0x<64 hex digits> is required");
const port = Number(args.port ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port ${args.port}`);
const confirmationTimeoutMs =
  args["confirmation-timeout-ms"] === undefined ? undefined : Number(args["confirmation-timeout-ms"]);

const account = privateKeyToAccount(args.key);
const viemClient = createWalletClient({
  account,
  chain: localChain(args.rpc),
  transport: http(args.rpc, { retryCount: 0, timeout: 30_000 }),
  ...FAST_POLLING,
}).extend(publicActions);

// The signer adapter of the reference example, over the local chain.
const evmSigner = toFacilitatorEvmSigner(
  {
    address: account.address,
    getCode: (a) => viemClient.getCode(a),
    readContract: (a) => viemClient.readContract({ ...a, args: a.args || [] }),
    verifyTypedData: (a) => viemClient.verifyTypedData(a),
    writeContract: (a) => viemClient.writeContract({ ...a, args: a.args || [] }),
    sendTransaction: (a) => viemClient.sendTransaction(a),
    waitForTransactionReceipt: (a) => viemClient.waitForTransactionReceipt(a),
  },
  confirmationTimeoutMs === undefined ? {} : { confirmationTimeoutMs },
);

const facilitator = new x402Facilitator();
facilitator.register(NETWORK_V2, new ExactEvmScheme(evmSigner));
// Without a receiver-authorizer key of its own: the server signs its claims and refunds.
facilitator.register(NETWORK_V2, new BatchSettlementEvmScheme(evmSigner));
facilitator.registerV1(NETWORK_V1, new ExactEvmSchemeV1(evmSigner));

function reply(res, status, body) {
  const text = toJson(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
  return { status, text };
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error("request body too large"), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function paymentRoute(req, res, action) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (error) {
    return reply(res, error.status ?? 400, { error: `invalid request body: ${error.message}` });
  }
  const { paymentPayload, paymentRequirements } = body ?? {};
  if (!paymentPayload || !paymentRequirements) {
    return reply(res, 400, { error: "Missing paymentPayload or paymentRequirements" });
  }
  try {
    return reply(res, 200, await facilitator[action](paymentPayload, paymentRequirements));
  } catch (error) {
    process.stderr.write(`${action} error: ${error?.stack ?? error}\n`);
    const message = error instanceof Error ? error.message : "Unknown error";
    if (action === "settle" && message.includes("Settlement aborted:")) {
      return reply(res, 200, {
        success: false,
        errorReason: message.replace("Settlement aborted: ", ""),
        network: paymentPayload?.network || "unknown",
      });
    }
    return reply(res, 500, { error: message });
  }
}

async function route(req, res) {
  const path = new URL(req.url, "http://127.0.0.1").pathname;
  const allowed = { "/verify": "POST", "/settle": "POST", "/supported": "GET", "/health": "GET" };
  if (!(path in allowed)) return reply(res, 404, { error: "not found" });
  if (req.method !== allowed[path]) {
    res.setHeader("allow", allowed[path]);
    return reply(res, 405, { error: "method not allowed" });
  }
  switch (path) {
    case "/verify":
      return paymentRoute(req, res, "verify");
    case "/settle":
      return paymentRoute(req, res, "settle");
    case "/supported":
      return reply(res, 200, facilitator.getSupported());
    default:
      return reply(res, 200, { status: "ok" });
  }
}

const server = createServer(async (req, res) => {
  const started = Date.now();
  let outcome;
  try {
    outcome = await route(req, res);
  } catch (error) {
    outcome = res.headersSent ? { status: res.statusCode, text: "" } : reply(res, 500, { error: String(error?.message ?? error) });
  }
  const summary = outcome.text.length > 300 ? `${outcome.text.slice(0, 300)}…` : outcome.text;
  process.stderr.write(
    `${new Date().toISOString()} ${req.method} ${req.url} -> ${outcome.status} (${Date.now() - started} ms) ${summary}\n`,
  );
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

server.listen(port, "127.0.0.1", () => {
  const { port: bound } = server.address();
  process.stderr.write(`facilitator signer ${account.address}, rpc ${args.rpc}\n`);
  process.stdout.write(`listening on http://127.0.0.1:${bound}\n`);
});
