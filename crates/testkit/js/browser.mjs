// Opens an hb402 URL in headless Chromium (the system browser, driven by puppeteer-core) with a
// test wallet injected into the page, plays one paywall scenario and prints what a person would
// have seen as one JSON object on stdout.
//
//   node browser.mjs '<spec JSON>'
//
// The wallet is an EIP-1193 provider announced through EIP-6963 (or set as window.ethereum, or
// absent). It answers accounts and chain questions itself and forwards eth_signTypedData_v4 and
// eth_call to the chain's RPC, whose development accounts sign typed data (anvil). It lives in
// this process and is reached through a binding, so the page's Content-Security-Policy applies
// to the page exactly as it is served.
//
// spec: {
//   url, rpc, account,                  the page, the chain, the wallet's (unlocked) account
//   wallet: "eip6963" | "ethereum" | "none",   how the page finds the wallet (default eip6963)
//   chainId,                            the wallet's network at start (default 84532)
//   knownChains: [ids],                 networks the wallet can switch to without adding them
//   rejectSignature: bool,              the person rejects the signature request
//   refuseSwitch: bool,                 the person refuses to switch networks
//   drainBeforeSigning: bool,           the account sends all its tokens away, then signs
//   stallChainMs,                       on signing, the chain stops mining for this long (the
//                                       settlement stays pending meanwhile)
//   delayMs,                            wait this long on the page before paying
//   interrupt: "abort" | "502" | "hang", the page's first paid request breaks (connection reset,
//                                       a gateway's 502, or no answer and the page is reloaded)
//   retry: bool,                        after an interrupted payment, press the button again
//   keyboard: bool,                     operate the page with Tab and Enter only
//   viewport: {width, height},
//   reload: bool,                       reload after the content is shown, and report again
//   reloadAfterMs,                      wait this long before that reload
//   screenshots: {before, after},       PNG paths
//   timeoutMs                           bound on waiting for an outcome (default 60000)
// }
import puppeteer from "puppeteer-core";

const spec = JSON.parse(process.argv[2]);
const executablePath = process.env.HB402_CHROMIUM || "/usr/bin/chromium";
const origin = new URL(spec.url).origin;
const timeout = spec.timeoutMs ?? 60000;

const walletLog = [];
let chainId = spec.chainId ?? 84532;
const known = new Set(spec.knownChains ?? [84532]);
let rpcId = 0;

async function rpc(method, params) {
  const resp = await fetch(spec.rpc, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method, params }),
  });
  const out = await resp.json();
  if (out.error) throw { code: out.error.code ?? -32603, message: out.error.message };
  return out.result;
}

async function wallet(method, params) {
  walletLog.push({ method, params });
  switch (method) {
    case "eth_requestAccounts":
    case "eth_accounts":
      return [spec.account];
    case "eth_chainId":
      return "0x" + chainId.toString(16);
    case "wallet_switchEthereumChain": {
      if (spec.refuseSwitch) throw { code: 4001, message: "User rejected the request." };
      const id = parseInt(params[0].chainId, 16);
      if (!known.has(id)) throw { code: 4902, message: "Unrecognized chain ID" };
      chainId = id;
      return null;
    }
    case "wallet_addEthereumChain":
      known.add(parseInt(params[0].chainId, 16));
      return null;
    case "eth_signTypedData_v4": {
      if (spec.rejectSignature) throw { code: 4001, message: "User rejected the request." };
      const typed = JSON.parse(params[1]);
      if (Number(typed.domain.chainId) !== chainId) {
        throw { code: -32603, message: "the typed data's chain is not the active chain" };
      }
      if (spec.drainBeforeSigning) await drain(typed.domain.verifyingContract);
      if (spec.stallChainMs) {
        await rpc("evm_setAutomine", [false]);
        setTimeout(() => {
          rpc("evm_mine", []).then(() => rpc("evm_setAutomine", [true])).catch(() => {});
        }, spec.stallChainMs);
      }
      return rpc("eth_signTypedData_v4", [spec.account, params[1]]);
    }
    case "eth_call":
      return rpc("eth_call", params);
    default:
      throw { code: 4200, message: `unsupported method ${method}` };
  }
}

// Sends every token of the account to a burn address (the payment then cannot settle).
async function drain(token) {
  const owner = spec.account.slice(2).toLowerCase().padStart(64, "0");
  const balance = await rpc("eth_call", [{ to: token, data: "0x70a08231" + owner }, "latest"]);
  const to = "000000000000000000000000000000000000000000000000000000000000dead";
  const data = "0xa9059cbb" + to + balance.slice(2).padStart(64, "0");
  const hash = await rpc("eth_sendTransaction", [{ from: spec.account, to: token, data }]);
  for (let i = 0; i < 100; i++) {
    const receipt = await rpc("eth_getTransactionReceipt", [hash]);
    if (receipt) {
      if (receipt.status !== "0x1") throw new Error("the drain transaction failed");
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("the drain transaction was not mined");
}

// Runs in the page before its own script: the provider, talking to `wallet` above.
function injected(kind) {
  const listeners = {};
  const provider = {
    isHb402TestWallet: true,
    async request({ method, params }) {
      const out = await window.__hb402Wallet(method, params === undefined ? null : JSON.stringify(params));
      if (out.error) {
        const e = new Error(out.error.message);
        e.code = out.error.code;
        throw e;
      }
      return out.result;
    },
    on(event, fn) {
      (listeners[event] ||= []).push(fn);
    },
    removeListener(event, fn) {
      listeners[event] = (listeners[event] || []).filter((f) => f !== fn);
    },
  };
  if (kind === "ethereum") {
    window.ethereum = provider;
  } else if (kind === "eip6963") {
    const detail = Object.freeze({
      info: {
        uuid: "7b1f6a36-2f0c-4b8e-9f0e-3b7d7f4f1a01",
        name: "Test Wallet",
        icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'%3E%3Crect width='8' height='8' fill='%23f80'/%3E%3C/svg%3E",
        rdns: "test.hb402.wallet",
      },
      provider,
    });
    const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail }));
    window.addEventListener("eip6963:requestProvider", announce);
    announce();
  }
}

// What the page shows now.
async function observe(page) {
  return page.evaluate(() => {
    const visible = (id) => {
      const el = document.getElementById(id);
      return el && !el.hidden ? el : null;
    };
    const content = document.getElementById("content");
    const media = content && content.querySelector("img, audio, video, iframe");
    const img = content && content.querySelector("img");
    return {
      heading: document.getElementById("heading")?.textContent ?? null,
      summary: document.getElementById("summary")?.textContent ?? null,
      facts: document.querySelector(".facts")?.innerText ?? null,
      status: document.getElementById("status")?.textContent ?? null,
      error: visible("error")?.innerText ?? null,
      payVisible: !!visible("pay"),
      resultVisible: !!visible("result"),
      kind: content?.dataset.kind ?? null,
      text: content?.querySelector("pre")?.textContent ?? null,
      mediaSrc: media ? media.src : null,
      imageDecoded: img ? img.complete && img.naturalWidth > 0 : null,
      download: document.getElementById("download")?.href ?? null,
      downloadName: document.getElementById("download")?.getAttribute("download") ?? null,
      proof: visible("result") ? document.getElementById("proof").innerText : null,
      overflow: document.documentElement.scrollWidth > window.innerWidth,
    };
  });
}

// The bytes behind a blob: URL, read from another page of the same origin.
async function blobBytes(browser, url) {
  if (!url || !url.startsWith("blob:")) return null;
  const reader = await browser.newPage();
  try {
    await reader.goto(origin + "/hb402-blob-reader", { waitUntil: "load" });
    return await reader.evaluate(async (u) => {
      const bytes = new Uint8Array(await (await fetch(u)).arrayBuffer());
      let bin = "";
      bytes.forEach((b) => { bin += String.fromCharCode(b); });
      return btoa(bin);
    }, url);
  } finally {
    await reader.close();
  }
}

async function outcome(page) {
  await page.waitForFunction(
    () => {
      const shown = (id) => { const el = document.getElementById(id); return el && !el.hidden; };
      return shown("result") || shown("error");
    },
    { timeout, polling: 100 },
  );
}

// Tabs to the pay button (bounded) and presses Enter; returns how many Tabs it took.
async function payWithKeyboard(page) {
  for (let tabs = 1; tabs <= 25; tabs++) {
    await page.keyboard.press("Tab");
    const on = await page.evaluate(() => document.activeElement?.id ?? "");
    if (on === "pay-button") {
      await page.keyboard.press("Enter");
      return tabs;
    }
  }
  throw new Error("the pay button cannot be reached with Tab");
}

async function main() {
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--disable-gpu"],
  });
  const report = { walletCalls: walletLog, foreignRequests: [], consoleErrors: [], paymentAnswers: [] };
  try {
    const page = await browser.newPage();
    if (spec.viewport) await page.setViewport(spec.viewport);
    page.on("request", (r) => {
      const u = r.url();
      if (!u.startsWith(origin + "/") && !u.startsWith("blob:") && !u.startsWith("data:")) {
        report.foreignRequests.push(u);
      }
    });
    if (spec.interrupt) {
      let interrupted = false;
      await page.setRequestInterception(true);
      page.on("request", (r) => {
        if (!interrupted && r.headers()["payment-signature"]) {
          interrupted = true;
          report.interrupted = r.url();
          if (spec.interrupt === "abort") return r.abort("connectionreset");
          if (spec.interrupt === "502") return r.respond({ status: 502, contentType: "text/html", body: "<h1>502 Bad Gateway</h1>" });
          return undefined; // "hang": never answered
        }
        return r.continue();
      });
    }
    page.on("console", (m) => {
      if (m.type() === "error") report.consoleErrors.push(m.text());
    });
    // The status of every answer to a request that carried a payment.
    page.on("response", (r) => {
      if (r.request().headers()["payment-signature"]) report.paymentAnswers.push(r.status());
    });
    page.on("pageerror", (e) => report.consoleErrors.push(String(e)));
    await page.exposeFunction("__hb402Wallet", async (method, params) => {
      try {
        return { result: await wallet(method, params === null ? undefined : JSON.parse(params)) };
      } catch (e) {
        return { error: { code: e.code ?? -32603, message: String(e.message ?? e) } };
      }
    });
    await page.evaluateOnNewDocument(injected, spec.wallet ?? "eip6963");
    const resp = await page.goto(spec.url, { waitUntil: "load" });
    report.status = resp.status();
    report.contentType = resp.headers()["content-type"] ?? null;
    report.csp = resp.headers()["content-security-policy"] ?? null;
    report.headers = resp.headers();
    if (report.status !== 402) {
      report.body = await resp.text();
      return report;
    }
    await page.waitForFunction(() => document.body.dataset.ready === "true", { timeout });
    report.before = await observe(page);
    if (spec.screenshots?.before) await page.screenshot({ path: spec.screenshots.before, fullPage: true });
    if (!report.before.resultVisible) {
      if (spec.delayMs) await new Promise((resolve) => setTimeout(resolve, spec.delayMs));
      if (spec.keyboard) {
        report.tabs = await payWithKeyboard(page);
      } else {
        await page.click("#pay-button");
      }
    }
    if (spec.interrupt === "hang") {
      await page.waitForFunction(() => Object.keys(sessionStorage).some((k) => k.startsWith("hb402:pending:")), { timeout });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await page.reload({ waitUntil: "load" });
    }
    await outcome(page);
    if (spec.interrupt && spec.retry) {
      report.interruptedAt = await observe(page);
      await page.click("#pay-button");
      await page.waitForFunction(() => !document.getElementById("result").hidden || document.getElementById("error").innerText !== "", { timeout });
    }
    report.after = await observe(page);
    report.after.focused = await page.evaluate(() => document.activeElement?.id ?? "");
    report.after.bytes = await blobBytes(browser, report.after.download);
    if (spec.screenshots?.after) await page.screenshot({ path: spec.screenshots.after, fullPage: true });
    if (spec.reload && report.after.resultVisible) {
      const callsBefore = walletLog.length;
      if (spec.reloadAfterMs) await new Promise((resolve) => setTimeout(resolve, spec.reloadAfterMs));
      const again = await page.reload({ waitUntil: "load" });
      await page.waitForFunction(() => document.body.dataset.ready === "true", { timeout });
      report.reload = await observe(page);
      report.reload.httpStatus = again.status();
      report.reload.walletCalls = walletLog.length - callsBefore;
      report.reload.bytes = await blobBytes(browser, report.reload.download);
    }
    return report;
  } finally {
    await browser.close();
  }
}

main().then(
  (report) => {
    process.stdout.write(JSON.stringify(report) + "\n");
  },
  (e) => {
    process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
    process.exit(1);
  },
);
