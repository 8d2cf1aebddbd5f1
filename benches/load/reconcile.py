#!/usr/bin/env python3
"""Reconciles hb402's payment ledger with the chain after a load run.

Waits (bounded) until no ledger row is still verified or pending, then checks that
- the payee's USDC balance rose by exactly the sum of the settled rows' amounts, and
- every settled row's transaction is mined, succeeded, and carries the `AuthorizationUsed`
  event of that row's payer and nonce, from the row's asset.

Prints one line: `settled=N transactions=M open=K verdict=ok|MISMATCH:<why>`.
"""

import argparse
import json
import time
import urllib.request

AUTHORIZATION_USED = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
BALANCE_OF = "0x70a08231"


def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def ledger(admin, key):
    rows, since = [], 0
    while True:
        request = urllib.request.Request(
            f"{admin}/admin/payments?since={since}&limit=1000",
            headers={"authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
        # `exact` payments only: a channel's entries (deposits, claims, refunds, settles) are
        # not one authorization each.
        rows += [r for r in page["payments"] if r.get("kind", "exact") == "exact"]
        if not page["payments"]:
            return rows
        since = page["next"]


def balance(url, asset, owner):
    data = BALANCE_OF + owner.lower().removeprefix("0x").rjust(64, "0")
    return int(rpc(url, "eth_call", [{"to": asset, "data": data}, "latest"]), 16)


def used_in(receipt, asset, payer, nonce):
    for log in receipt["logs"]:
        topics = [t.lower() for t in log["topics"]]
        if (
            log["address"].lower() == asset.lower()
            and len(topics) == 3
            and topics[0] == AUTHORIZATION_USED
            and int(topics[1], 16) == int(payer, 16)
            and int(topics[2], 16) == int(nonce, 16)
        ):
            return True
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpc", required=True)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--payee", required=True)
    parser.add_argument("--before", required=True, type=int)
    args = parser.parse_args()

    deadline = time.time() + 120
    while True:
        rows = ledger(args.admin, args.key)
        still = [r for r in rows if r["state"] in ("verified", "pending", "reserved")]
        if not still or time.time() > deadline:
            break
        time.sleep(1)
    settled = [r for r in rows if r["state"] == "settled"]
    problems = []
    receipts = {}
    total = 0
    asset = None
    for row in settled:
        asset = row["asset"]
        total += int(row["amount"])
        tx = row["transaction"]
        if tx not in receipts:
            receipts[tx] = rpc(args.rpc, "eth_getTransactionReceipt", [tx])
        receipt = receipts[tx]
        nonce = row["lock_key"].rsplit(":", 1)[1]
        if receipt is None or receipt["status"] != "0x1":
            problems.append(f"row {row['id']}: transaction {tx} not mined or failed")
        elif not used_in(receipt, row["asset"], row["payer"], nonce):
            problems.append(f"row {row['id']}: transaction {tx} did not use its authorization")
    if asset is not None:
        rise = balance(args.rpc, asset, args.payee) - args.before
        if rise != total:
            problems.append(f"payee balance rose by {rise}, settled rows sum to {total}")
    verdict = "ok" if not problems else "MISMATCH:" + "|".join(problems[:3]).replace(" ", "_")
    print(f"settled={len(settled)} transactions={len(receipts)} open={len(still)} verdict={verdict}")


if __name__ == "__main__":
    main()
