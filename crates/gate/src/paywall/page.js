"use strict";
// The browser paywall: finds a wallet (EIP-6963, else window.ethereum), signs the offer's
// EIP-3009 TransferWithAuthorization (eth_signTypedData_v4, the payload a v2 x402 client builds),
// retries this URL with PAYMENT-SIGNATURE and shows what was bought. A receipt kept in
// sessionStorage opens the item again without a second payment while it is valid. A signed
// payment is kept (sessionStorage: this tab only, out of reach of other documents) from before
// it is first sent until hb402 gives a definite answer: a reload or a broken connection sends
// that same payment again, which is never charged twice, instead of signing a second one.
(() => {
  const data = JSON.parse(document.getElementById("hb402-data").textContent);
  const $ = (id) => document.getElementById(id);
  // The URL exactly as loaded (a path starting with "//" must not become another host).
  const here = location.href.split("#")[0];
  // Keyed by the resource hb402 sells, whatever query or fragment the page was opened with.
  const receiptKey = "hb402:receipt:" + data.resource.url;
  const pendingKey = "hb402:pending:" + data.resource.url;
  // Seconds between hb402's clock and this browser's: authorizations use hb402's time.
  const skew = data.now - Math.floor(Date.now() / 1000);
  const serverNow = () => Math.floor(Date.now() / 1000) + skew;
  const wallets = [];
  let busy = false;

  // A signed payment not yet answered for certain: {header, offer, validBefore, sent}. In
  // memory only when the browser refuses storage.
  let remembered = null;
  function stored() {
    try {
      return { value: JSON.parse(sessionStorage.getItem(pendingKey) || "null") };
    } catch {
      return null; // storage refused
    }
  }
  function loadPending() {
    const s = stored();
    const p = s ? s.value : remembered;
    if (!p || typeof p.header !== "string") return null;
    if (Number(p.validBefore) + 86400 < serverNow()) {
      clearPending(p); // long past its window: hb402 has answered it for certain by now
      return null;
    }
    return p;
  }
  function savePending(p) {
    remembered = p;
    try { sessionStorage.setItem(pendingKey, JSON.stringify(p)); } catch { /* storage off */ }
  }
  // Forgets payment `p`, and only it.
  function clearPending(p) {
    if (remembered && remembered.header === p.header) remembered = null;
    const s = stored();
    if (s && s.value && s.value.header === p.header) {
      try { sessionStorage.removeItem(pendingKey); } catch { /* storage off */ }
    }
  }

  class Stop extends Error {}

  function status(text) {
    $("status").textContent = text || "";
  }

  function showError(title, detail) {
    status("");
    const box = $("error");
    box.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    box.append(strong);
    if (detail) box.append(document.createTextNode(detail));
    box.hidden = false;
    box.focus();
  }

  function clearError() {
    $("error").hidden = true;
    $("error").replaceChildren();
  }

  const fail = (title, detail) => {
    throw new Stop(title + "\n" + (detail || ""));
  };

  // --- wallets ---------------------------------------------------------------------------------
  window.addEventListener("eip6963:announceProvider", (event) => {
    const d = event.detail;
    if (!d || !d.provider || typeof d.provider.request !== "function" || !d.info) return;
    if (wallets.some((w) => w.info.uuid === d.info.uuid)) return;
    wallets.push({ info: d.info, provider: d.provider });
    renderWallets();
  });
  window.dispatchEvent(new Event("eip6963:requestProvider"));

  // One option of the radio group `name`: the first is chosen.
  function choice(name, i, ...content) {
    const label = document.createElement("label");
    label.className = "choice";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = name;
    input.value = String(i);
    input.checked = i === 0;
    label.append(input, ...content);
    return { label, input };
  }

  // The chosen option of the radio group `name` (the first when none is).
  function chosen(name) {
    const checked = document.querySelector(`input[name="${name}"]:checked`);
    return checked ? Number(checked.value) : 0;
  }

  function renderWallets() {
    const list = $("wallet-list");
    list.replaceChildren();
    wallets.forEach((w, i) => {
      const content = [];
      if (typeof w.info.icon === "string" && w.info.icon.startsWith("data:image/")) {
        const img = document.createElement("img");
        img.src = w.info.icon;
        img.alt = "";
        content.push(img);
      }
      content.push(document.createTextNode(String(w.info.name || "Wallet")));
      list.append(choice("wallet", i, ...content).label);
    });
    $("wallets").hidden = wallets.length < 2;
  }

  function chosenWallet() {
    if (wallets.length > 0) return wallets[chosen("wallet")].provider;
    return window.ethereum && typeof window.ethereum.request === "function" ? window.ethereum : null;
  }

  function walletCode(e) {
    return e && typeof e === "object" ? e.code : undefined;
  }

  async function ask(provider, method, params, onRefuse) {
    try {
      return await provider.request(params === undefined ? { method } : { method, params });
    } catch (e) {
      const code = walletCode(e);
      if (code === 4001) fail(onRefuse, "Nothing was paid.");
      if (code === -32002) fail("Your wallet already has a request open.", "Finish or close it in the wallet, then try again. Nothing was paid.");
      throw e;
    }
  }

  async function ensureChain(provider, offer) {
    const want = "0x" + offer.chainId.toString(16);
    const current = async () => parseInt(await ask(provider, "eth_chainId", undefined, "The wallet refused to say its network."), 16);
    if ((await current()) === offer.chainId) return;
    status(`Asking your wallet to switch to ${offer.network}…`);
    try {
      await ask(provider, "wallet_switchEthereumChain", [{ chainId: want }], `You declined to switch your wallet to ${offer.network}.`);
    } catch (e) {
      if (e instanceof Stop) throw e;
      if (walletCode(e) !== 4902) fail(`Your wallet could not switch to ${offer.network}.`, "Switch it yourself (chain id " + offer.chainId + ") and try again. Nothing was paid.");
      if (!offer.addChain) fail(`Your wallet does not know ${offer.network}.`, "Add the network (chain id " + offer.chainId + ") in your wallet and try again. Nothing was paid.");
      status(`Asking your wallet to add ${offer.network}…`);
      await ask(provider, "wallet_addEthereumChain", [offer.addChain], `You declined to add ${offer.network} to your wallet.`);
      if ((await current()) !== offer.chainId) {
        await ask(provider, "wallet_switchEthereumChain", [{ chainId: want }], `You declined to switch your wallet to ${offer.network}.`);
      }
    }
    if ((await current()) !== offer.chainId) {
      fail(`Your wallet is on the wrong network.`, `Switch it to ${offer.network} (chain id ${offer.chainId}) and try again. Nothing was paid.`);
    }
  }

  async function usdcBalance(provider, asset, owner) {
    const data = "0x70a08231" + owner.slice(2).toLowerCase().padStart(64, "0");
    try {
      const out = await provider.request({ method: "eth_call", params: [{ to: asset, data }, "latest"] });
      return typeof out === "string" && /^0x[0-9a-fA-F]+$/.test(out) ? BigInt(out) : null;
    } catch {
      return null; // the wallet cannot read: hb402 checks the balance itself
    }
  }

  function units(atomic, decimals) {
    const s = atomic.toString().padStart(decimals + 1, "0");
    const frac = s.slice(s.length - decimals).replace(/0+$/, "");
    return s.slice(0, s.length - decimals) + (frac ? "." + frac : "");
  }

  function hexNonce() {
    const bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function base64Json(value) {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    let bin = "";
    bytes.forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin);
  }

  function fromBase64Json(text) {
    if (!text) return null;
    try {
      const bin = atob(text.trim());
      return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    } catch {
      return null;
    }
  }

  // --- paying ----------------------------------------------------------------------------------
  async function buildPayment(provider, index) {
    const accepted = data.accepts[index];
    const offer = data.offers[index];
    if (data.item && data.item.expiresAt && data.item.expiresAt <= serverNow()) {
      fail("This item has expired.", "It can no longer be bought. Nothing was paid.");
    }
    status("Connecting to your wallet…");
    const accounts = await ask(provider, "eth_requestAccounts", undefined, "You declined to connect your wallet.");
    const from = Array.isArray(accounts) ? accounts[0] : null;
    if (typeof from !== "string" || !/^0x[0-9a-fA-F]{40}$/.test(from)) fail("Your wallet gave no account.", "Unlock it and try again. Nothing was paid.");
    await ensureChain(provider, offer);
    status("Checking your USDC balance…");
    const balance = await usdcBalance(provider, accepted.asset, from);
    if (balance !== null && balance < BigInt(accepted.amount)) {
      fail(`Not enough ${offer.symbol}.`, ` ${from} holds ${units(balance, offer.decimals)} ${offer.symbol} on ${offer.network}; the price is ${offer.price} ${offer.symbol}. Nothing was paid.`);
    }
    const now = serverNow();
    const authorization = {
      from,
      to: accepted.payTo,
      value: accepted.amount,
      // "0", as the reference client signs: a chain whose last block is old must not find the
      // authorization not yet valid.
      validAfter: "0",
      validBefore: String(now + accepted.maxTimeoutSeconds),
      nonce: hexNonce(),
    };
    const typed = {
      types: {
        EIP712Domain: [
          { name: "name", type: "string" },
          { name: "version", type: "string" },
          { name: "chainId", type: "uint256" },
          { name: "verifyingContract", type: "address" },
        ],
        TransferWithAuthorization: [
          { name: "from", type: "address" },
          { name: "to", type: "address" },
          { name: "value", type: "uint256" },
          { name: "validAfter", type: "uint256" },
          { name: "validBefore", type: "uint256" },
          { name: "nonce", type: "bytes32" },
        ],
      },
      primaryType: "TransferWithAuthorization",
      domain: {
        name: accepted.extra.name,
        version: accepted.extra.version,
        chainId: offer.chainId,
        verifyingContract: accepted.asset,
      },
      message: authorization,
    };
    status(`Confirm the payment of ${offer.price} ${offer.symbol} in your wallet…`);
    const signature = await ask(provider, "eth_signTypedData_v4", [from, JSON.stringify(typed)], "You rejected the signature request.");
    if (typeof signature !== "string" || !/^0x[0-9a-fA-F]+$/.test(signature)) fail("Your wallet returned no signature.", "Nothing was paid.");
    const header = base64Json({
      x402Version: 2,
      resource: data.resource,
      accepted,
      payload: { signature, authorization },
    });
    return { header, offer: index, validBefore: Number(authorization.validBefore) };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Sends the payment; while hb402 reports the settlement pending, sends the same one again
  // (it is never charged twice). Returns the first other answer.
  async function send(header) {
    for (let attempt = 0; attempt < 24; attempt++) {
      const resp = await fetch(here, { headers: { "PAYMENT-SIGNATURE": header, Accept: "*/*" }, cache: "no-store", redirect: "error" });
      if (resp.status !== 504) return resp;
      const body = await resp.clone().json().catch(() => ({}));
      if (body.error !== "settlement_pending") return resp;
      status("The payment is being confirmed on chain…");
      const wait = Number(resp.headers.get("retry-after")) || 2;
      await sleep(Math.min(Math.max(wait, 1), 10) * 1000);
    }
    return null;
  }

  const UNCONFIRMED = ["The payment could not be confirmed.", "It may have gone through. Press the button to ask again: this same payment is sent, never a second one."];

  const REASONS = [
    [/insufficient/, "Not enough USDC.", "Your wallet does not hold enough USDC for this price. Nothing was paid."],
    [/valid_before|valid_after|expired/, "The offer expired.", "The payment authorization was outside its time window when it arrived. Pay again; nothing was paid."],
    [/signature/, "The signature was not accepted.", "Your wallet signed something hb402 could not verify. Nothing was paid."],
    [/nonce|already_used|duplicate/, "This payment was already used.", "Check your wallet's activity before paying again."],
    [/settle|transaction|simulation/, "The settlement failed.", "The transfer did not go through on chain, so nothing was paid."],
  ];

  async function explain(resp, resent) {
    const body = await resp.json().catch(() => ({}));
    const code = String(body.error || "");
    if (resent) {
      // Sent before, and its answer never arrived here: it may have been charged then.
      fail("hb402 did not accept this payment when it was sent again.", `It may have been charged when it was first sent, for a request whose answer did not arrive (${code || resp.status}). Check your wallet's activity before paying again.`);
    }
    const message = typeof body.message === "string" ? " hb402 said: " + body.message : "";
    if (resp.status === 410) fail("This item has expired.", "It can no longer be bought. Nothing was paid.");
    if (resp.status === 429) fail("Too many failed payments from this wallet.", "Wait a few minutes, then try again. Nothing was paid.");
    if (resp.status === 402) {
      for (const [pattern, title, detail] of REASONS) {
        if (pattern.test(code)) fail(title, detail + message);
      }
      fail("The payment was not accepted.", "Nothing was paid." + message);
    }
    fail(`The request failed (${resp.status}).`, message.trim());
  }

  async function pay() {
    if (busy) return;
    busy = true;
    $("pay-button").disabled = true;
    clearError();
    try {
      // A receipt (from a download that broke) opens the item without paying; one that no
      // longer opens it stops here: paying again is the person's decision.
      const opened = await openWithReceipt();
      if (opened === "opened") return;
      if (opened === "failed") {
        fail("Your receipt no longer opens this item.", "It expired or hb402 refused it. Press the button to pay for the item again.");
      }
      let payment = loadPending();
      const resent = payment !== null && payment.sent === true;
      if (payment) {
        status("Sending your earlier payment again…");
      } else {
        const index = chosen("offer");
        const provider = chosenWallet();
        if (!provider) {
          fail("No wallet found.", "Install or enable an Ethereum wallet in this browser (one that holds USDC on " + data.offers[index].network + "), then reload this page. Nothing was paid.");
        }
        payment = await buildPayment(provider, index);
      }
      // Kept before it leaves: whatever happens next, this payment is the one sent again.
      payment.sent = true;
      savePending(payment);
      status("Settling the payment on chain…");
      let resp = null;
      try {
        resp = await send(payment.header);
      } catch {
        resp = null; // the connection broke: the outcome is unknown
      }
      if (!resp || resp.status >= 500) {
        markPending();
        fail(...UNCONFIRMED);
      }
      // Any other answer is definite: paid (200) or refused.
      clearPending(payment);
      resetButton();
      if (resp.status !== 200) await explain(resp, resent);
      await delivered(resp, payment.offer);
    } catch (e) {
      if (e instanceof Stop) {
        const [title, detail] = e.message.split("\n");
        showError(title, detail);
      } else {
        showError("The payment did not complete.", String(e && e.message ? e.message : e));
      }
    } finally {
      busy = false;
      $("pay-button").disabled = false;
    }
  }

  // The paid answer: its receipt is kept first, then the item is shown.
  async function delivered(resp, offer) {
    const settlement = fromBase64Json(resp.headers.get("payment-response")) || {};
    const receipt = resp.headers.get(data.receiptHeader);
    const record = {
      transaction: settlement.transaction || "",
      payer: settlement.payer || "",
      offer,
      receipt,
      until: receiptExpiry(receipt),
    };
    if (receipt && record.until) {
      try { sessionStorage.setItem(receiptKey, JSON.stringify(record)); } catch { /* storage off */ }
    }
    try {
      await show(resp, record, false);
    } catch {
      const tx = record.transaction ? ` (transaction ${record.transaction})` : "";
      fail(`You paid${tx}, but the download broke.`, record.until
        ? "Press the button to open the item again with your receipt: you will not pay again."
        : "hb402 gave no receipt to open it again: keep the transaction as proof of payment and do not pay again.");
    }
  }

  function markPending() {
    $("pay-button").textContent = "Check the payment";
  }

  function resetButton() {
    const offer = data.offers[chosen("offer")];
    $("pay-button").textContent = `Pay ${offer.price} ${offer.symbol}`;
  }

  function receiptExpiry(token) {
    if (!token || token.indexOf(".") < 0) return 0;
    try {
      const payload = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(payload + "===".slice((payload.length + 3) % 4)));
      return Number(claims.e) || 0;
    } catch {
      return 0;
    }
  }

  // --- showing ---------------------------------------------------------------------------------
  const IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"]);
  const TEXTS = new Set(["text/plain", "text/csv", "text/markdown", "application/json"]);
  const EXTENSIONS = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "image/avif": "avif",
    "image/bmp": "bmp", "image/svg+xml": "svg", "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/wav": "wav",
    "audio/webm": "weba", "video/mp4": "mp4", "video/webm": "webm", "video/ogg": "ogv", "application/pdf": "pdf",
    "text/plain": "txt", "text/csv": "csv", "text/markdown": "md", "application/json": "json", "text/html": "html",
    "application/zip": "zip",
  };
  const TEXT_SHOWN = 1 << 20;

  function kindOf(type) {
    if (IMAGES.has(type)) return "image";
    if (type.startsWith("audio/")) return "audio";
    if (type.startsWith("video/")) return "video";
    if (type === "application/pdf") return "pdf";
    if (TEXTS.has(type)) return "text";
    return "download"; // active or unknown types are never rendered on this origin
  }

  // Object URLs of what is shown, revoked when something else is.
  let shownUrls = [];
  // Items larger than this are offered as a download only, not also shown in the page.
  const SHOWN_BYTES = 64 << 20;

  async function show(resp, record, fromReceipt) {
    const type = (resp.headers.get("content-type") || "application/octet-stream").split(";")[0].trim().toLowerCase();
    const body = await resp.blob();
    const kind = body.size > SHOWN_BYTES ? "download" : kindOf(type);
    // One copy of the bytes: typed for the passive kinds, plain bytes for everything else, so
    // that nothing becomes a document of this origin.
    const blob = new Blob([body], { type: kind === "download" ? "application/octet-stream" : type });
    shownUrls.forEach((u) => URL.revokeObjectURL(u));
    const url = URL.createObjectURL(blob);
    shownUrls = [url];
    const content = $("content");
    content.replaceChildren();
    content.dataset.kind = kind;
    let el = null;
    if (kind === "image") {
      el = document.createElement("img");
      el.alt = data.item ? `DataItem ${data.item.id}` : "the item";
      el.src = url;
    } else if (kind === "audio" || kind === "video") {
      el = document.createElement(kind);
      el.controls = true;
      el.src = url;
    } else if (kind === "pdf") {
      el = document.createElement("iframe");
      el.title = "the item (PDF)";
      el.src = url;
    } else if (kind === "text") {
      el = document.createElement("pre");
      el.tabIndex = 0;
      const text = await blob.slice(0, TEXT_SHOWN).text();
      el.textContent = blob.size > TEXT_SHOWN ? text + "\n…" : text;
    } else {
      el = document.createElement("p");
      el.textContent = `This ${type} item is not shown in the page; download it below.`;
    }
    content.append(el);
    const name = (data.item ? data.item.id : "item") + "." + (EXTENSIONS[type] || "bin");
    const download = $("download");
    download.href = url;
    download.download = name;
    download.textContent = `Download ${name} (${blob.size.toLocaleString("en")} bytes)`;
    showProof(record, fromReceipt);
    $("pay").hidden = true;
    $("heading").textContent = fromReceipt ? "Paid earlier" : "Paid";
    $("summary").textContent = fromReceipt
      ? "Opened again with your receipt: no second payment."
      : "The payment settled; here is what you bought.";
    status("");
    $("result").hidden = false;
    $("result-heading").focus();
  }

  function showProof(record, fromReceipt) {
    const proof = $("proof");
    proof.replaceChildren();
    const offer = data.offers[record.offer] || data.offers[0];
    const row = (name, value, link) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      if (link) {
        const a = document.createElement("a");
        a.href = link;
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        a.textContent = value;
        dd.append(a);
      } else {
        dd.textContent = value;
      }
      dd.className = name === "Paid" ? "paid" : "mono";
      proof.append(dt, dd);
    };
    row("Paid", `${offer.price} ${offer.symbol} on ${offer.network}` + (fromReceipt ? " (earlier)" : ""));
    if (record.transaction) {
      const link = offer.explorer && /^0x[0-9a-fA-F]{64}$/.test(record.transaction) ? `${offer.explorer}/tx/${record.transaction}` : null;
      row("Transaction", record.transaction, link);
    }
    if (record.payer) row("Payer", record.payer);
    if (record.until) {
      row("Receipt", "valid until " + new Date(record.until * 1000).toLocaleString());
    }
  }

  // --- start -----------------------------------------------------------------------------------
  function renderOffers() {
    const list = $("offer-list");
    data.offers.forEach((offer, i) => {
      const text = document.createTextNode(`${offer.price} ${offer.symbol} on ${offer.network}`);
      const { label, input } = choice("offer", i, text);
      input.addEventListener("change", resetButton);
      list.append(label);
    });
    $("offers").hidden = data.offers.length < 2;
    resetButton();
  }

  // "opened" (the item is shown), "none" (no receipt kept) or "failed" (the receipt no longer
  // opens it); throws when the connection broke (the receipt is kept for the next try).
  async function openWithReceipt() {
    let record = null;
    try { record = JSON.parse(sessionStorage.getItem(receiptKey) || "null"); } catch { record = null; }
    if (!record || !record.receipt) return "none";
    const forget = () => {
      try { sessionStorage.removeItem(receiptKey); } catch { /* storage off */ }
    };
    if (!(record.until > serverNow())) {
      forget();
      return "failed";
    }
    status("Opening what you paid for with your receipt…");
    let resp = null;
    try {
      resp = await fetch(here, { headers: { [data.receiptHeader]: record.receipt, Accept: "*/*" }, cache: "no-store", redirect: "error" });
    } catch {
      resp = null;
    }
    if (!resp || resp.status >= 500) {
      fail("The item could not be loaded.", "Press the button to try again with your receipt: you will not pay again.");
    }
    if (resp.status !== 200) {
      forget();
      status("");
      return "failed";
    }
    await show(resp, record, true);
    return "opened";
  }

  async function start() {
    if (data.offers.length === 0) return;
    if (!data.item) {
      // An upload: its body is not this page's to send again.
      $("client-only").hidden = false;
      return;
    }
    renderOffers();
    $("pay-button").addEventListener("click", pay);
    // A payment signed earlier (another tab, a reload) is sent again; a receipt opens the item.
    // Nothing new is ever signed without the person pressing the button.
    if (loadPending()) {
      $("pay").hidden = false;
      markPending();
      await pay();
      return;
    }
    try {
      if ((await openWithReceipt()) === "opened") return;
    } catch (e) {
      if (e instanceof Stop) showError(...e.message.split("\n"));
    }
    $("pay").hidden = false;
  }

  start().finally(() => {
    document.body.dataset.ready = "true";
  });
})();
