// Verifies ANS-104 DataItems with @dha-team/arbundles; one JSON line per file on stdout:
//   {"file","id","valid","signature_type","owner_b64url"}   (+ "error" when arbundles throws)
//
//   node verify.mjs FILE...
//
// Exit status: 0 when every file was read (whatever its validity), 1 when a file could not be read,
// 2 on a usage error. Used by the Rust tests to check that items hb402 signs verify under arbundles.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const { DataItem } = require("@dha-team/arbundles/build/node/cjs/src/index");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node verify.mjs FILE...");
  process.exit(2);
}

let status = 0;
for (const file of files) {
  const out = { file, id: null, valid: false, signature_type: null, owner_b64url: null };
  let buf;
  try {
    buf = readFileSync(file);
  } catch (e) {
    out.error = `read: ${e.message}`;
    console.log(JSON.stringify(out));
    status = 1;
    continue;
  }
  try {
    if (buf.length >= 2) out.signature_type = buf.readUInt16LE(0);
    const item = new DataItem(buf);
    out.id = item.id;
    out.owner_b64url = item.owner;
    const verified = await DataItem.verify(buf);
    const isValid = await item.isValid();
    out.valid = verified && isValid;
  } catch (e) {
    out.valid = false;
    out.error = e.message;
  }
  console.log(JSON.stringify(out));
}
process.exit(status);
