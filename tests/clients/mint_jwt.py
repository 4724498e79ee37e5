"""Mints one JWT with PyJWT and prints it: mint_jwt.py ALG KEY_FILE CLAIMS_JSON.

KEY_FILE holds the HS256 secret, or the private key in PEM for RS256/ES256. Used by
tests/token_claims.rs to check that pushwire accepts tokens from an independent library.
"""

import json
import sys

import jwt


def main() -> None:
    alg, key_file, claims = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with open(key_file, "rb") as f:
        key = f.read()
    if alg == "HS256":
        key = key.decode()
    print(jwt.encode(claims, key, algorithm=alg))


if __name__ == "__main__":
    main()
