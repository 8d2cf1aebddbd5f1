"""Pays for one GET with the unmodified PyPI `x402` client, the way an application would.

    python pay.py --key 0xPRIVKEY [--max-value ATOMIC] [--data-file PATH] URL

Uses `x402HttpxClient` (an `httpx.AsyncClient` whose transport answers 402s) over an
`x402Client` with the EVM exact scheme registered by `register_exact_evm_client` for
eip155:84532 (v2) and every v1 EVM network (base-sepolia among them), and the client's default
spend controls (Base Sepolia USDC is a default asset). --max-value adds the package's
`max_amount` policy.

Prints one JSON line on stdout:
  {"status", "headers": {lower-case name: value}, "body_base64",
   "payment_response": <decoded PAYMENT-RESPONSE or X-PAYMENT-RESPONSE JSON, or null>}
and exits 0 whatever the status (the caller asserts). If the client raises, prints
{"error": message} and exits 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys

from eth_account import Account
from x402 import max_amount, x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

NETWORK_V2 = "eip155:84532"
TIMEOUT_SECONDS = 60.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="0x + 64 hex digits")
    parser.add_argument("--max-value", help="drop offers above this many atomic units")
    parser.add_argument("--data-file", help="POST this file's bytes instead of a GET")
    parser.add_argument("url")
    args = parser.parse_args()
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", args.key):
        parser.error("--key must be 0x followed by 64 hex digits")
    if args.max_value is not None and not re.fullmatch(r"[0-9]+", args.max_value):
        parser.error("--max-value must be a decimal integer")
    return args


def decode_settlement(value: str | None) -> object:
    if value is None:
        return None
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except ValueError:
        return None


async def pay(args: argparse.Namespace) -> dict[str, object]:
    client = x402Client()
    signer = EthAccountSigner(Account.from_key(args.key))
    register_exact_evm_client(client, signer, networks=NETWORK_V2)
    if args.max_value is not None:
        client.register_policy(max_amount(int(args.max_value)))

    # trust_env=False: a proxy from the environment must not sit between the client and a
    # loopback test server.
    async with x402HttpxClient(client, timeout=TIMEOUT_SECONDS, trust_env=False) as http:
        if args.data_file is None:
            response = await http.get(args.url)
        else:
            with open(args.data_file, "rb") as data:
                body = data.read()
            response = await http.post(args.url, content=body)
        body = await response.aread()
    headers = {name.lower(): value for name, value in response.headers.items()}
    settlement = headers.get("payment-response", headers.get("x-payment-response"))
    return {
        "status": response.status_code,
        "headers": headers,
        "body_base64": base64.b64encode(body).decode("ascii"),
        "payment_response": decode_settlement(settlement),
    }


def main() -> int:
    args = parse_args()
    try:
        result = asyncio.run(pay(args))
    except Exception as error:  # noqa: BLE001 - any client failure is reported, not raised
        cause = f": {error.__cause__}" if error.__cause__ else ""
        print(json.dumps({"error": f"{type(error).__name__}: {error}{cause}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
