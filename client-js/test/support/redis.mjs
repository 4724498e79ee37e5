// A throwaway redis-server on a free port, for tests of the Redis broker.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

export const REDIS_SERVER = process.env.REDIS_SERVER_PATH ?? 'redis-server';

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  static async start() {
    const port = await freePort();
    const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error('redis-server not ready within 10 s')), 10000);
      const done = (error) => {
        clearTimeout(timer);
        if (error) {
          child.kill('SIGKILL');
          reject(new Error(`${error.message}\n${output}`));
        } else resolve();
      };
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        output += chunk;
        if (output.includes('Ready to accept connections')) done();
      });
      child.once('error', (err) => done(new Error(`cannot run ${REDIS_SERVER} (apt-get install -y redis-server): ${err.message}`)));
      child.once('exit', (code) => done(new Error(`redis-server exited early with ${code}`)));
    });
    const server = new RedisServer();
    server.port = port;
    server.child = child;
    server.exited = new Promise((resolve) => child.once('exit', resolve));
    return server;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    await this.exited;
  }
}
