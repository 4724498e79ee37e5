// Starts the real pushwire binary for integration tests.
//
// `await TestServer.start({ config })` writes a temp TOML config, runs
// `pushwire serve --config FILE --listen 127.0.0.1:0`, and reads the port from
// the one line the server prints on stdout. `restart()` stops it (SIGTERM,
// then waits for exit) and starts it again on the same port, so clients can
// reconnect to the same URL. The binary comes from $PUSHWIRE_BIN, default
// ../target/release/pushwire relative to client-js.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const clientRoot = resolve(fileURLToPath(new URL('../../', import.meta.url)));
export const PUSHWIRE_BIN = resolve(clientRoot, process.env.PUSHWIRE_BIN ?? '../target/release/pushwire');
export const API_KEY = 'client-js-test-key';

/** Namespaces most tests use. */
export const NAMESPACES = {
  // Channels without ':' : no history, client publish allowed.
  default: { allow_publish: 'all' },
  // History, presence, join/leave, client publish: the full feature set.
  feed: { history_size: 2000, history_ttl_secs: 300, presence: true, join_leave: true, allow_publish: 'all' },
  // Nothing optional enabled, client publish refused.
  plain: {},
};

/** The base config; `overrides` is merged one level deep into it. */
export function testConfig(overrides = {}) {
  const base = {
    node_name: 'client-js-test',
    allow_anonymous: true,
    server: { shutdown_grace_secs: 2 },
    api: { keys: [API_KEY] },
    log: { level: 'warn' },
    namespaces: NAMESPACES,
  };
  const merged = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    merged[key] = isTable(value) && isTable(base[key]) ? { ...base[key], ...value } : value;
  }
  return merged;
}

function isTable(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Serializes plain objects as TOML: scalars and arrays first, then [tables]. */
export function toToml(object, prefix = '') {
  const lines = [];
  const tables = [];
  for (const [key, value] of Object.entries(object)) {
    if (isTable(value)) tables.push([key, value]);
    else lines.push(`${key} = ${JSON.stringify(value)}`);
  }
  let out = lines.join('\n') + (lines.length ? '\n' : '');
  for (const [key, value] of tables) {
    const name = prefix ? `${prefix}.${key}` : key;
    out += `\n[${name}]\n` + toToml(value, name);
  }
  return out;
}

export class TestServer {
  constructor(config) {
    this.config = config;
    this.dir = mkdtempSync(join(tmpdir(), 'pushwire-client-js-'));
    this.configPath = join(this.dir, 'pushwire.toml');
    writeFileSync(this.configPath, toToml(config));
    this.port = 0;
    this.child = null;
    this.stderr = '';
    /** Clients disconnected by dispose() before the server stops. */
    this.clients = new Set();
  }

  /** Starts a server with `testConfig(overrides)`, or exactly `config` if given. */
  static async start({ overrides = {}, config, port = 0 } = {}) {
    if (!existsSync(PUSHWIRE_BIN)) {
      throw new Error(`pushwire binary not found at ${PUSHWIRE_BIN}: build it (cargo build --release -p pushwire) or set PUSHWIRE_BIN`);
    }
    const server = new TestServer(config ?? testConfig(overrides));
    await server.launch(port);
    return server;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  async launch(port) {
    // The server reads PUSHWIRE_* variables as config overrides and refuses
    // unknown keys, so the test runner's own variables must not reach it.
    const env = { ...process.env, RUST_LOG: process.env.PUSHWIRE_TEST_LOG ?? 'warn' };
    delete env.PUSHWIRE_BIN;
    delete env.PUSHWIRE_TEST_LOG;
    const child = spawn(PUSHWIRE_BIN, ['serve', '--config', this.configPath, '--listen', `127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-20000);
      if (process.env.PUSHWIRE_TEST_LOG) process.stderr.write(chunk);
    });
    child.stdout.setEncoding('utf8');
    const address = await new Promise((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => fail(new Error('no "pushwire listening on" line within 10 s')), 10000);
      const fail = (error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${error.message}\n--- server stderr ---\n${this.stderr}`));
      };
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        const match = /pushwire listening on (\S+):(\d+)/.exec(buffered);
        if (match) {
          clearTimeout(timer);
          resolve({ host: match[1], port: Number(match[2]) });
        }
      });
      child.once('exit', (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`)));
      child.once('error', fail);
    });
    this.port = address.port;
  }

  /** SIGTERM, then wait for the exit (SIGKILL and fail after 10 s). */
  async stop() {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    let timer;
    const killed = new Promise((resolve) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('killed');
      }, 10000);
    });
    const outcome = await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    if (outcome === 'killed') throw new Error(`server did not exit within 10 s of SIGTERM\n${this.stderr}`);
    return outcome;
  }

  /** Stops the server and starts it again on the same port. */
  async restart() {
    const port = this.port;
    const exit = await this.stop();
    await this.launch(port);
    return exit;
  }

  /** SIGSTOP / SIGCONT: the process stays but goes silent (no pings, no replies). */
  pause() {
    this.child.kill('SIGSTOP');
  }

  resume() {
    this.child.kill('SIGCONT');
  }

  async dispose() {
    for (const client of this.clients) client.disconnect();
    try {
      if (this.child && this.child.signalCode === null) this.resume();
      await this.stop();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** Calls the HTTP API; returns { status, body } (body parsed as JSON when it is). */
  async api(method, path, body) {
    const response = await fetch(this.httpUrl + path, {
      method,
      headers: {
        authorization: `Bearer ${API_KEY}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await response.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON: keep the text.
    }
    return { status: response.status, body: parsed };
  }

  /** POST /api/publish; throws unless 200. Returns { offset?, epoch? }. */
  async publish(channel, data) {
    const { status, body } = await this.api('POST', '/api/publish', { channel, data });
    if (status !== 200) throw new Error(`POST /api/publish ${channel} -> ${status} ${JSON.stringify(body)}`);
    return body;
  }
}
