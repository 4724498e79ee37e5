// Mints one JWT with the `jsonwebtoken` npm package and prints it:
//   node mint_jwt.mjs ALG KEY_FILE CLAIMS_JSON
// KEY_FILE holds the HS256 secret, or the private key in PEM for RS256/ES256. Used by
// tests/token_claims.rs to check that pushwire accepts tokens from an independent library.
import { readFileSync } from 'node:fs';
import jwt from 'jsonwebtoken';

const [alg, keyFile, claimsJson] = process.argv.slice(2);
const key = readFileSync(keyFile);
const secret = alg === 'HS256' ? key.toString('utf8') : key;
// The claims are given whole (iat included or not), so no defaults are added.
console.log(jwt.sign(JSON.parse(claimsJson), secret, { algorithm: alg, noTimestamp: true }));
