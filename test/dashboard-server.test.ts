// The dashboard's HTTP service on its own: headers, /config.json, paths that must not leave the build directory.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkUrls, contentSecurityPolicy, DashboardServer } from '../dashboard/server/server.ts';
import { silentLogger } from '../services/common/log.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function fakeDist(): string {
  const dir = mkdtempSync(join(tmpdir(), 'myc-dist-'));
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
  writeFileSync(join(dir, 'assets', 'app-abc123.js'), 'console.log(1)');
  writeFileSync(join(dir, '..', `secret-${process.pid}.txt`), 'secret');
  return dir;
}

async function server(distDir = fakeDist()): Promise<DashboardServer> {
  const d = new DashboardServer(
    {
      port: 0,
      host: '127.0.0.1',
      brokerUrl: 'wss://broker.example:8443',
      title: 'Wall',
      tileUrl: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png',
      distDir,
    },
    { log: silentLogger() },
  );
  cleanups.push(() => d.stop());
  await d.start();
  return d;
}

/** A raw GET (fetch would normalise `..` away before sending). */
function get(port: number, path: string, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    },
  );
}

describe('dashboard service', () => {
  it('serves the page with a strict CSP and the broker URL in /config.json', async () => {
    const d = await server();
    const page = await get(d.port, '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).not.toContain('unsafe');
    expect(csp).toContain("img-src 'self' data: https://tile.openstreetmap.org");
    expect(csp).toContain("connect-src 'self' wss://broker.example:8443 https://broker.example:8443");
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.headers['referrer-policy']).toBe('no-referrer');
    expect(page.headers['cache-control']).toBe('no-cache');

    const config = await get(d.port, '/config.json');
    expect(JSON.parse(config.body)).toEqual({
      brokerUrl: 'wss://broker.example:8443',
      title: 'Wall',
      tileUrl: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png',
    });
    const asset = await get(d.port, '/assets/app-abc123.js');
    expect(asset.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(asset.headers['cache-control']).toContain('immutable');
  });

  it('never serves files outside the build directory', async () => {
    const d = await server();
    for (const path of [
      `/../secret-${process.pid}.txt`,
      `/%2e%2e/secret-${process.pid}.txt`,
      '/assets/%00x',
      '/nope.js',
    ]) {
      const res = await get(d.port, path);
      expect(res.status, path).toBe(404);
      expect(res.body).not.toContain('secret');
    }
    expect((await get(d.port, '/', 'POST')).status).toBe(405);
    const head = await get(d.port, '/', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('refuses to start without a build, naming the command that makes one', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'myc-nodist-'));
    const d = new DashboardServer(
      { port: 0, host: '127.0.0.1', brokerUrl: 'ws://localhost:8000', title: 'x', distDir: empty },
      { log: silentLogger() },
    );
    await expect(d.start()).rejects.toThrow(/npm run build:dashboard/);
    await d.stop();
  });

  it('leaves the tile host out of the CSP when tiles are off', () => {
    const csp = contentSecurityPolicy({ brokerUrl: 'ws://localhost:8000', tileUrl: '' });
    expect(csp).toContain("img-src 'self' data:;");
    expect(csp).toContain("connect-src 'self' ws://localhost:8000 http://localhost:8000");
  });

  it('refuses broker and tile URLs a browser could not use', () => {
    expect(() => checkUrls({ brokerUrl: 'http://localhost:8000', tileUrl: '' })).toThrow(/ws:\/\/ or wss:\/\//);
    expect(() => checkUrls({ brokerUrl: 'localhost:8000x', tileUrl: '' })).toThrow(/broker-url/);
    expect(() => checkUrls({ brokerUrl: 'ws://h:1', tileUrl: 'https://t.example/{z}/{x}.png' })).toThrow(/\{y\}/);
    expect(() => checkUrls({ brokerUrl: 'ws://h:1', tileUrl: 'javascript:alert(1)//{z}{x}{y}' })).toThrow(/tile-url/);
    expect(() => checkUrls({ brokerUrl: 'wss://h', tileUrl: 'https://t.example/{z}/{x}/{y}.png' })).not.toThrow();
  });
});
