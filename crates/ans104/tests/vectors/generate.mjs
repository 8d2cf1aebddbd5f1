// Reference ANS-104 DataItems for hb402-ans104, made with @dha-team/arbundles (see README.md).
//
//   node generate.mjs [OUTDIR]          all small fixtures + manifest.json (default: ./fixtures)
//   node generate.mjs --large OUTDIR    one 5 MiB type-2 item + its own manifest.json
//
// Keys come from ./keys (test-only keys). Ed25519 (types 2 and 4) and ECDSA RFC 6979 (type 3)
// signatures are deterministic, so those fixtures are byte-identical on every run; RSA-PSS (type 1)
// uses a random salt, so type-1 fixtures change whenever they are regenerated.

import { createRequire } from "node:module";
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, constants as cc } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The package root also loads `file`, which needs the optional `axios` peer dependency.
const require = createRequire(import.meta.url);
const arbundles = require("@dha-team/arbundles/build/node/cjs/src/index");
const { createData, DataItem, ArweaveSigner, EthereumSigner, SolanaSigner, HexInjectedSolanaSigner, keccak256 } = arbundles;

const HERE = dirname(fileURLToPath(import.meta.url));
const KEYS = join(HERE, "keys");

// ---------------------------------------------------------------- helpers

const sha256 = (b) => createHash("sha256").update(b).digest();
const b64url = (b) => Buffer.from(b).toString("base64url");

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
function base58(bytes) {
  let n = BigInt("0x" + (Buffer.from(bytes).toString("hex") || "0"));
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = "1" + out;
  }
  return out;
}

function ethChecksumAddress(owner65) {
  const addr = keccak256(Buffer.from(owner65.subarray(1))).subarray(12).toString("hex");
  const h = keccak256(Buffer.from(addr, "utf8")).toString("hex");
  let out = "0x";
  for (let i = 0; i < 40; i++) out += parseInt(h[i], 16) >= 8 ? addr[i].toUpperCase() : addr[i];
  return out;
}

function ownerAddress(type, owner) {
  switch (type) {
    case 1:
      return b64url(sha256(owner));
    case 3:
      return ethChecksumAddress(owner);
    case 2:
    case 4:
      return base58(owner);
    default:
      return null;
  }
}

const SIG = { 1: [512, 512], 2: [64, 32], 3: [65, 65], 4: [64, 32] };

// Independent parse of the binary layout (ans104.md §1); cross-checked against arbundles below.
function layout(buf) {
  const type = buf.readUInt16LE(0);
  const [s, o] = SIG[type];
  let p = 2 + s + o;
  const flag = (f) => {
    if (f !== 0 && f !== 1) throw new Error(`presence byte ${f}`);
    return f === 1;
  };
  const hasTarget = flag(buf[p]);
  p += 1;
  const target = hasTarget ? buf.subarray(p, p + 32) : null;
  if (hasTarget) p += 32;
  const hasAnchor = flag(buf[p]);
  p += 1;
  const anchor = hasAnchor ? buf.subarray(p, p + 32) : null;
  if (hasAnchor) p += 32;
  const tagCount = Number(buf.readBigUInt64LE(p));
  const tagBytes = Number(buf.readBigUInt64LE(p + 8));
  const tagsStart = p + 16;
  return { type, signature: buf.subarray(2, 2 + s), owner: buf.subarray(2 + s, 2 + s + o), target, anchor, tagCount, tagBytes, tagsStart, dataOffset: tagsStart + tagBytes };
}

// RSA-PSS salt length actually used by a type-1 signature (Node's default verify auto-detects).
function rsaSaltLength(item, message) {
  const key = createPublicKey({ key: { kty: "RSA", n: b64url(item.rawOwner), e: "AQAB" }, format: "jwk" });
  for (const saltLength of [32, 478, 0]) {
    if (nodeVerify("sha256", message, { key, padding: cc.RSA_PKCS1_PSS_PADDING, saltLength }, item.rawSignature)) return saltLength;
  }
  return null;
}

function check(cond, msg) {
  if (!cond) throw new Error("check failed: " + msg);
}

async function describe(file, buf, extra = {}) {
  const item = new DataItem(buf);
  const l = layout(buf);
  check(l.dataOffset === item.getStartOfData(), `${file}: data offset ${l.dataOffset} vs arbundles ${item.getStartOfData()}`);
  check(l.type === item.signatureType, `${file}: signature type`);
  check(l.tagCount === item.tags.length, `${file}: tag count ${l.tagCount} vs decoded ${item.tags.length}`);
  check(b64url(sha256(l.signature)) === item.id, `${file}: id`);
  const data = buf.subarray(l.dataOffset);
  check(data.equals(item.rawData), `${file}: data`);
  const valid = await item.isValid();
  check(valid === (await DataItem.verify(buf)), `${file}: isValid vs DataItem.verify`);
  const entry = {
    file,
    signature_type: l.type,
    id: item.id,
    owner_b64url: b64url(l.owner),
    owner_address: ownerAddress(l.type, l.owner),
    target_b64url: l.target ? b64url(l.target) : null,
    anchor_b64url: l.anchor ? b64url(l.anchor) : null,
    tags: item.tags.map((t) => ({ name: t.name, value: t.value })),
    tag_count: l.tagCount,
    tag_bytes: l.tagBytes,
    data_offset: l.dataOffset,
    data_size: data.length,
    data_sha256_hex: sha256(data).toString("hex"),
    valid,
    size: buf.length,
  };
  if (l.type === 1 && valid) entry.rsa_pss_salt_len = rsaSaltLength(item, await item.getSignatureData());
  return { ...entry, ...extra };
}

// ---------------------------------------------------------------- keys and signers

const readHex = (name) => Buffer.from(readFileSync(join(KEYS, name), "utf8").trim(), "hex");

const edSeed = readHex("ed25519.seed.hex");
check(edSeed.length === 32, "ed25519 seed length");
// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410).
const edKey = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), edSeed]), format: "der", type: "pkcs8" });
const edPub = Buffer.from(createPublicKey(edKey).export({ format: "jwk" }).x, "base64url");

const solanaSigner = new SolanaSigner(base58(Buffer.concat([edSeed, edPub])));
check(Buffer.from(solanaSigner.publicKey).equals(edPub), "SolanaSigner public key");

// A wallet-adapter stub: HexInjectedSolanaSigner hands it the hex text of the deep hash.
const stubWallet = {
  publicKey: { toBuffer: () => Buffer.from(edPub) },
  signMessage: async (message) => new Uint8Array(nodeSign(null, Buffer.from(message), edKey)),
};
const hexSolanaSigner = new HexInjectedSolanaSigner(stubWallet);

const ethSigner = new EthereumSigner(readHex("secp256k1.key.hex").toString("hex"));
const arweaveSigner = new ArweaveSigner(JSON.parse(readFileSync(join(KEYS, "arweave.jwk.json"), "utf8")));

// ---------------------------------------------------------------- content

const TAGS = [
  { name: "Content-Type", value: "text/plain" },
  { name: "App-Name", value: "hb402-test" },
];
const TARGET_AA = b64url(Buffer.alloc(32, 0xaa));
const ANCHOR_ASCII = "hb402-anchor-0123456789abcdefghi";
check(Buffer.byteLength(ANCHOR_ASCII) === 32, "anchor length");

// JSON with one line per tag (keeps the manifest of the 128-tag item readable).
function manifestJson(entries) {
  return JSON.stringify(entries, null, 2).replace(/\{\n\s*"name": ("(?:[^"\\]|\\.)*"),\n\s*"value": ("(?:[^"\\]|\\.)*")\n\s*\}/g, '{ "name": $1, "value": $2 }') + "\n";
}

async function make(data, signer, opts) {
  const item = createData(data, signer, opts);
  await item.sign(signer);
  return Buffer.from(item.getRaw());
}

// Avro encoding written here rather than by arbundles, for items arbundles' writer cannot produce
// (several blocks, negative block counts, more than 4096 tag bytes). ans104.md §3.1.
function avroLong(n) {
  let z = n >= 0 ? BigInt(n) << 1n : ((-BigInt(n)) << 1n) - 1n;
  const out = [];
  do {
    let b = Number(z & 0x7fn);
    z >>= 7n;
    if (z > 0n) b |= 0x80;
    out.push(b);
  } while (z > 0n);
  return Buffer.from(out);
}
const avroBytes = (s) => Buffer.concat([avroLong(Buffer.byteLength(s)), Buffer.from(s)]);
// blocks: [{ tags: [{name, value}], negative: bool }]
function avroTagBlocks(blocks) {
  const parts = [];
  for (const { tags, negative } of blocks) {
    const body = Buffer.concat(tags.flatMap((t) => [avroBytes(t.name), avroBytes(t.value)]));
    parts.push(negative ? Buffer.concat([avroLong(-tags.length), avroLong(body.length)]) : avroLong(tags.length), body);
  }
  parts.push(avroLong(0));
  return Buffer.concat(parts);
}

// Builds an item (no target, no anchor) around given raw tag bytes and signs it with arbundles.
async function makeRawTags(data, signer, tagBytes, tagCount) {
  const head = 2 + signer.signatureLength + signer.ownerLength;
  const buf = Buffer.alloc(head + 2 + 16 + tagBytes.length + Buffer.byteLength(data));
  buf.writeUInt16LE(signer.signatureType, 0);
  Buffer.from(signer.publicKey).copy(buf, 2 + signer.signatureLength);
  buf.writeBigUInt64LE(BigInt(tagCount), head + 2);
  buf.writeBigUInt64LE(BigInt(tagBytes.length), head + 10);
  tagBytes.copy(buf, head + 18);
  Buffer.from(data).copy(buf, head + 18 + tagBytes.length);
  const item = new DataItem(buf);
  await item.sign(signer);
  return Buffer.from(item.getRaw());
}

// Vectors published in ans104.md §9 (deterministic signers must reproduce them).
const EXPECTED = {
  "ed25519_tags_target_anchor.ans104": { id: "Ekaibo2KKp_NjU_R73cJQriRQ3CH5Nnejan4p8lhF3Y", size: 237, data_offset: 226 },
  "ed25519_minimal.ans104": { id: "m5QMdMAaINas9G_kNlXqHOngwe4uWo8Y6Hij2g-_pDM", size: 117, data_offset: 116 },
  "ethereum_tags.ans104": { id: "Xjb8jhs3ZBZxC6Zc9Y5Q7PLjiehPJ_2EJMdXrHGWmTo", size: 207, data_offset: 196 },
  "solana_hex.ans104": { id: "CJEfJwzzOtMp5unuWE-wbVUUBjUAKKnkqVoMXPunM0g", size: 173, data_offset: 162 },
};

function flipByte(buf, index) {
  const out = Buffer.from(buf);
  out[index] ^= 0x01;
  return out;
}

async function generateAll(outDir) {
  const items = []; // [file, buffer, extra]
  const add = (file, buf, extra = {}) => items.push([file, buf, extra]);

  // Type 1 (Arweave RSA-4096 PSS). arbundles signs through Node with the maximum salt (478).
  add("arweave_tags_target_anchor.ans104", await make("hello hb402", arweaveSigner, { tags: TAGS, target: TARGET_AA, anchor: ANCHOR_ASCII }));
  add("arweave_minimal.ans104", await make("x", arweaveSigner, {}));
  const bigTags = [];
  for (let i = 0; i < 29; i++) {
    const n = String(i).padStart(2, "0");
    bigTags.push({ name: `X-Hb402-Header-Tag-${n}`, value: `value-${n}-abcdefghijklmnopqrstuvwxyz` });
  }
  bigTags.push({ name: "Content-Type", value: "application/json" }); // last: a reader must parse the whole header
  add("arweave_big_header.ans104", await make('{"hello":"hb402"}', arweaveSigner, { tags: bigTags }), {
    notes: "30 tags, Content-Type is the last one; header (data offset) > 2048 bytes",
  });
  // Same content as arweave_tags_target_anchor but re-signed with PSS salt length 32
  // (what HyperBEAM, arweave-js WebCrypto and bundles-rs produce).
  {
    const item = createData("hello hb402", arweaveSigner, { tags: TAGS, target: TARGET_AA, anchor: ANCHOR_ASCII });
    const message = await item.getSignatureData();
    const sig = nodeSign("sha256", message, { key: createPrivateKey(readFileSync(join(KEYS, "arweave.pkcs8.pem"))), padding: cc.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    await item.setSignature(sig);
    add("arweave_salt32.ans104", Buffer.from(item.getRaw()), { notes: "type 1 signed with RSA-PSS salt length 32 instead of arbundles' 478" });
  }

  // Type 3 (Ethereum, EIP-191 over the deep hash). RFC 6979: deterministic.
  const ethTags = await make("hello hb402", ethSigner, { tags: TAGS });
  add("ethereum_tags.ans104", ethTags);
  const target0 = b64url(Buffer.from(Array.from({ length: 32 }, (_, i) => i)));
  const anchorBin = Buffer.from(Array.from({ length: 32 }, (_, i) => 0xe0 + i)); // not valid UTF-8
  add("ethereum_target_anchor_notags.ans104", await make("hello hb402", ethSigner, { target: target0, anchor: anchorBin }), {
    notes: "target bytes 00..1f, anchor bytes e0..ff (binary, not UTF-8), no tags",
  });

  // Type 2 (Ed25519 via SolanaSigner, which yields type 2).
  const edTTA = await make("hello hb402", solanaSigner, { tags: TAGS, target: TARGET_AA, anchor: ANCHOR_ASCII });
  add("ed25519_tags_target_anchor.ans104", edTTA);
  add("ed25519_minimal.ans104", await make("x", solanaSigner, {}));
  try {
    add("ed25519_empty_data.ans104", await make("", solanaSigner, { tags: TAGS }), { notes: "empty data: arbundles creates, signs and verifies it" });
  } catch (e) {
    console.error(`arbundles refused empty data: ${e.message}`);
  }
  const tags128 = Array.from({ length: 128 }, (_, i) => ({ name: `t${String(i).padStart(3, "0")}`, value: `v${i}` }));
  add("ed25519_128_tags.ans104", await make("128 tags", solanaSigner, { tags: tags128 }), {
    notes: "exactly 128 tags (the ANS-104 maximum); tag bytes stay under arbundles' MAX_TAG_BYTES 4096",
  });

  // Edge cases around tag rules where implementations differ (ans104.md §3.2).
  add("ed25519_empty_tag_value.ans104", await make("hello hb402", solanaSigner, { tags: [{ name: "Content-Type", value: "text/plain" }, { name: "Empty", value: "" }] }), {
    notes: "second tag has an empty value: invalid per the ANS-104 text, but arbundles and HyperBEAM accept (and HyperBEAM writes) it",
  });
  {
    const tags = [{ name: "Content-Type", value: "text/plain" }, { name: "Big-1", value: "b".repeat(3072) }, { name: "Big-2", value: "c".repeat(1024) }];
    const raw = avroTagBlocks([{ tags, negative: false }]);
    check(raw.length > 4096, "tag bytes > 4096");
    // arbundles' serializeTags refuses more than 4096 bytes, so the tags are encoded here.
    add("ed25519_tag_bytes_over_4096.ans104", await makeRawTags("hello hb402", solanaSigner, raw, tags.length), {
      expect_invalid: true,
      notes: "correctly signed and within the ANS-104 limits, but tag bytes > 4096: arbundles cannot create it (serializeTags throws) and DataItem.verify (MAX_TAG_BYTES) reports it invalid",
    });
  }
  {
    // Same tags as TAGS, encoded as a negative-count block (with byte size) followed by a positive one.
    const raw = avroTagBlocks([{ tags: [TAGS[0]], negative: true }, { tags: [TAGS[1]], negative: false }]);
    add("ed25519_avro_blocks.ans104", await makeRawTags("hello hb402", solanaSigner, raw, 2), {
      notes: "tags Avro-encoded as two blocks, the first with a negative count and a byte size (ans104.md §3.1); arbundles reads and verifies it",
    });
  }

  // Type 4 (Solana wallet signing the hex text of the deep hash).
  add("solana_hex.ans104", await make("hello hb402", hexSolanaSigner, { tags: TAGS }));

  // Deliberately invalid: one byte flipped in an otherwise valid item.
  add("tampered_data.ans104", flipByte(ethTags, ethTags.length - 1), { derived_from: "ethereum_tags.ans104", notes: "last data byte xor 0x01" });
  add("tampered_signature.ans104", flipByte(edTTA, 2), { derived_from: "ed25519_tags_target_anchor.ans104", notes: "first signature byte xor 0x01 (the id changes with it)" });
  {
    const src = items.find(([f]) => f === "ed25519_tags_target_anchor.ans104")[1];
    const l = layout(src);
    const idx = l.tagsStart + l.tagBytes - 2; // last byte of the last tag value ("hb402-test" -> "hb402-tesu")
    add("tampered_tag.ans104", flipByte(src, idx), { derived_from: "ed25519_tags_target_anchor.ans104", notes: "last byte of the last tag value xor 0x01 (Avro still well-formed)" });
  }

  mkdirSync(outDir, { recursive: true });
  const manifest = [];
  for (const [file, buf, extra] of items) {
    const entry = await describe(file, buf, extra);
    const exp = EXPECTED[file];
    if (exp) {
      for (const k of Object.keys(exp)) {
        const got = k === "size" ? entry.size : entry[k];
        check(got === exp[k], `${file}: ${k} = ${got}, ans104.md §9 expects ${exp[k]}`);
      }
    }
    const expectInvalid = file.startsWith("tampered_") || entry.expect_invalid === true;
    delete entry.expect_invalid;
    check(entry.valid === !expectInvalid, `${file}: arbundles isValid = ${entry.valid}`);
    writeFileSync(join(outDir, file), buf);
    manifest.push(entry);
  }
  writeFileSync(join(outDir, "manifest.json"), manifestJson(manifest));
  for (const e of manifest) console.log(`${e.file}\ttype ${e.signature_type}\t${e.size} B\tdata@${e.data_offset}\tvalid=${e.valid}\t${e.id}`);
}

async function generateLarge(outDir) {
  const size = 5 * 1024 * 1024;
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31) % 251;
  const file = "ed25519_5mib.ans104";
  const buf = await make(data, solanaSigner, {
    tags: [
      { name: "Content-Type", value: "application/octet-stream" },
      { name: "App-Name", value: "hb402-test" },
    ],
  });
  const entry = await describe(file, buf, { notes: "data byte i = (i * 31) mod 251, 5 MiB" });
  check(entry.valid === true, `${file} should be valid`);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, file), buf);
  writeFileSync(join(outDir, "manifest.json"), manifestJson([entry]));
  console.log(`${file}\ttype ${entry.signature_type}\t${entry.size} B\tdata@${entry.data_offset}\tvalid=${entry.valid}\t${entry.id}`);
}

const args = process.argv.slice(2);
if (args[0] === "--large") {
  if (args.length !== 2) {
    console.error("usage: node generate.mjs --large OUTDIR");
    process.exit(2);
  }
  await generateLarge(args[1]);
} else if (args.length <= 1 && !(args[0] ?? "").startsWith("-")) {
  await generateAll(args[0] ?? join(HERE, "fixtures"));
} else {
  console.error("usage: node generate.mjs [OUTDIR] | node generate.mjs --large OUTDIR");
  process.exit(2);
}
