// HS256 JWTs for tests, with node:crypto (the client never mints tokens).
import { createHmac } from 'node:crypto';

const b64url = (value) => Buffer.from(value).toString('base64url');

export function mintHs256(secret, claims) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);
