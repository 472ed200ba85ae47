// What the agent reports about its device as resources (rhizo-server's controller status): refreshed every
// --status-interval seconds. Plain values, so the dashboard shows them like any node's.
import { statfs } from 'node:fs/promises';
import { arch, freemem, hostname, loadavg, platform, release, totalmem, uptime } from 'node:os';
import type { Json } from '../protocol/messages.ts';

export async function deviceStatus(agentVersion: string, diskPath = '/'): Promise<Record<string, Json>> {
  const [l1, l5, l15] = loadavg();
  let diskFreeBytes: number | null = null;
  try {
    const fs = await statfs(diskPath);
    diskFreeBytes = fs.bavail * fs.bsize;
  } catch {
    // A path that cannot be read reports null rather than failing the whole status.
  }
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    hostname: hostname(),
    os: `${platform()} ${release()} ${arch()}`,
    agentVersion,
    uptimeS: Math.round(uptime()),
    load: [round(l1), round(l5), round(l15)],
    memFreeBytes: freemem(),
    memTotalBytes: totalmem(),
    diskFreeBytes,
  };
}
