// The broker's CORS rules (services/broker/cors.ts) over real HTTP: a listed dashboard origin gets credentialed
// answers on the cookie routes and may preflight writes with a token; any other origin gets no CORS header on the
// cookie routes (so its browser refuses) and reads with a token only, as before. Also the option's checks and
// what `mycelium up` passes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardOrigins } from '../cli/up/up.ts';
import { parseOrigins } from '../services/broker/cors.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { startUp } from './helpers/up-process.ts';

const DASHBOARD = 'http://localhost:8080';
const FOREIGN = 'http://evil.example';

let tb: TestBroker;
beforeAll(async () => {
  // Given with a trailing slash and upper case: the broker compares the normalised origin.
  tb = await startBroker({ dashboardOrigin: ['HTTP://LOCALHOST:8080/'] });
});
afterAll(() => tb?.stop());

function preflight(path: string, origin: string, method: string, headers: string) {
  return fetch(`${tb.http}${path}`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers },
  });
}

const corsHeaders = (res: Response) =>
  [...res.headers.keys()].filter((k) => k.startsWith('access-control-')).sort((a, b) => a.localeCompare(b));

describe('CORS for the cookie routes', () => {
  it('a listed origin gets credentials with its exact origin, on the preflight and the answer', async () => {
    for (const path of ['/api/v1/login', '/api/v1/refresh', '/api/v1/logout']) {
      const pre = await preflight(path, DASHBOARD, 'POST', 'content-type,x-mycelium-refresh');
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe(DASHBOARD);
      expect(pre.headers.get('access-control-allow-credentials')).toBe('true');
      expect(pre.headers.get('access-control-allow-methods')).toBe('POST');
      expect(pre.headers.get('access-control-allow-headers')).toBe('Content-Type, X-Mycelium-Refresh');
      expect(pre.headers.get('vary')).toContain('Origin');
    }
    const res = await fetch(`${tb.http}/api/v1/refresh`, {
      method: 'POST',
      headers: { origin: DASHBOARD, 'x-mycelium-refresh': '1' },
    });
    expect(res.status).toBe(401); // no cookie: the answer is readable by the page, which then shows sign-in
    expect(res.headers.get('access-control-allow-origin')).toBe(DASHBOARD);
    expect(res.headers.get('access-control-allow-credentials')).toBe('true');
  });

  it('a foreign origin gets no CORS header at all, so its browser sends nothing and reads nothing', async () => {
    for (const path of ['/api/v1/login', '/api/v1/refresh', '/api/v1/logout', '/api/v1/login?x=1']) {
      const pre = await preflight(path, FOREIGN, 'POST', 'content-type,x-mycelium-refresh');
      expect(pre.status).toBe(204);
      expect(corsHeaders(pre)).toEqual([]);
    }
    // Neither a port of the listed host nor the other loopback name is the listed origin.
    for (const origin of ['http://localhost:8081', 'http://127.0.0.1:8080', 'https://localhost:8080', 'null']) {
      expect(corsHeaders(await preflight('/api/v1/login', origin, 'POST', 'content-type'))).toEqual([]);
    }
    const res = await fetch(`${tb.http}/api/v1/login`, {
      method: 'POST',
      headers: { origin: FOREIGN, 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: 'whatever it is' }),
    });
    expect(corsHeaders(res)).toEqual([]);
    const logout = await fetch(`${tb.http}/api/v1/logout`, {
      method: 'POST',
      headers: { origin: FOREIGN, authorization: 'Bearer x', 'x-mycelium-refresh': '1' },
    });
    expect(corsHeaders(logout)).toEqual([]);
  });
});

describe('CORS for the other routes', () => {
  it('a listed origin may preflight writes with a token, and read the answer', async () => {
    const pre = await preflight('/api/v1/keys/0123456789abcdef', DASHBOARD, 'DELETE', 'authorization');
    expect(pre.headers.get('access-control-allow-origin')).toBe(DASHBOARD);
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET, POST, PUT, DELETE');
    expect(pre.headers.get('access-control-allow-headers')).toBe('Authorization, Content-Type');
    // Tokens are not cookies: no credentials flag off the cookie routes.
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const token = await tb.keys.token('operator', 'olga');
    const put = await fetch(`${tb.http}/api/v1/nodes/x/resources/led`, {
      method: 'PUT',
      headers: { origin: DASHBOARD, authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(put.status).toBe(404);
    expect(put.headers.get('access-control-allow-origin')).toBe(DASHBOARD);
    expect(put.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('a foreign origin keeps the old rules: reads with a token only, never a write', async () => {
    const pre = await preflight('/api/v1/keys', FOREIGN, 'POST', 'authorization,content-type');
    expect(pre.headers.get('access-control-allow-origin')).toBe(FOREIGN);
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET');
    expect(pre.headers.get('access-control-allow-headers')).toBe('Authorization');
    const token = await tb.keys.token('operator', 'olga');
    const get = await fetch(`${tb.http}/api/v1/nodes`, {
      headers: { origin: FOREIGN, authorization: `Bearer ${token}` },
    });
    expect(get.headers.get('access-control-allow-origin')).toBe(FOREIGN);
    const put = await fetch(`${tb.http}/api/v1/nodes/x/resources/led`, {
      method: 'PUT',
      headers: { origin: FOREIGN, authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(put.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('a broker without --dashboard-origin opens no cookie route and no write to anyone', async () => {
    const plain = await startBroker();
    try {
      const pre = await fetch(`${plain.http}/api/v1/login`, {
        method: 'OPTIONS',
        headers: { origin: DASHBOARD, 'access-control-request-method': 'POST' },
      });
      expect(corsHeaders(pre)).toEqual([]);
      const write = await fetch(`${plain.http}/api/v1/keys`, {
        method: 'OPTIONS',
        headers: { origin: DASHBOARD, 'access-control-request-method': 'POST' },
      });
      expect(write.headers.get('access-control-allow-methods')).toBe('GET');
    } finally {
      await plain.stop();
    }
  });
});

describe('--dashboard-origin', () => {
  it('normalises origins and refuses what is not an http(s) origin', () => {
    expect([...parseOrigins(['http://Localhost:80', 'https://dash.example/x/', ' '])]).toEqual([
      'http://localhost',
      'https://dash.example',
    ]);
    for (const bad of ['*', 'localhost:8080', 'file:///tmp/x', 'javascript:alert(1)', 'null']) {
      expect(() => parseOrigins([bad])).toThrow(/--dashboard-origin/);
    }
  });

  it('a bad origin stops the broker at start with the flag named', async () => {
    await expect(startBroker({ dashboardOrigin: ['*'] })).rejects.toThrow(/--dashboard-origin/);
  });

  it('mycelium up passes its own dashboard origin, and the ones added', () => {
    const services = ['broker', 'dashboard'];
    expect(dashboardOrigins({ services, dashboardPort: 8080, dashboardOrigin: undefined }, 'localhost')).toEqual([
      'http://localhost:8080',
    ]);
    expect(dashboardOrigins({ services, dashboardPort: 0, dashboardOrigin: ['https://hub.lab'] }, 'localhost')).toEqual(
      ['https://hub.lab'],
    );
    expect(dashboardOrigins({ services: ['broker'], dashboardPort: 8080, dashboardOrigin: undefined }, 'h')).toEqual(
      [],
    );
  });

  it('a real mycelium up lets its own dashboard sign in, and an added origin, and nobody else', async () => {
    const up = await startUp({
      args: ['--services', 'broker,dashboard', '--accounts', 'off', '--dashboard-origin', 'https://hub.lab'],
    });
    try {
      const broker = `http://127.0.0.1:${up.ports.broker}`;
      const credentialed = async (origin: string) =>
        (
          await fetch(`${broker}/api/v1/login`, {
            method: 'OPTIONS',
            headers: { origin, 'access-control-request-method': 'POST' },
          })
        ).headers.get('access-control-allow-credentials');
      expect(await credentialed(`http://localhost:${up.ports.dashboard}`)).toBe('true');
      expect(await credentialed('https://hub.lab')).toBe('true');
      expect(await credentialed(FOREIGN)).toBeNull();
    } finally {
      await up.kill();
    }
  }, 60_000);
});
