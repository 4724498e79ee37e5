// From a Node backend: mint a connection token (jsonwebtoken) and publish (fetch).
import jwt from 'jsonwebtoken';

const PUSHWIRE = process.env.PUSHWIRE_URL ?? 'http://127.0.0.1:8080';
const API_KEY = process.env.PUSHWIRE_API_KEY; // one of the server's api.keys
const SECRET = process.env.PUSHWIRE_TOKEN_SECRET; // the server's auth.token_hmac_secret

// A connection token for the signed-in user; the browser sends it in `connect`.
export function connectionToken(userId, info) {
  return jwt.sign({ sub: userId, info }, SECRET, { algorithm: 'HS256', expiresIn: '1h' });
}

// Publishes `data` on `channel` through the HTTP API.
export async function publish(channel, data) {
  const response = await fetch(`${PUSHWIRE}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
  return response.json(); // {offset, epoch} on channels with history, {} otherwise
}

const token = connectionToken('alice', { name: 'Alice' });
const result = await publish('feed:orders', { order: 42, status: 'shipped' });
console.log(JSON.stringify({ token, result }));
