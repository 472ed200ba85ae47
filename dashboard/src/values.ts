// Turning what devices report into something to draw. Devices send free text ("23.5°C", "1013.25hPa",
// "400ppm"), numbers, or JSON strings; every parser here tolerates garbage and says so instead of throwing.
import type { Json } from '../../services/protocol/messages.ts';

export interface Reading {
  value: number;
  unit: string;
}

const NUMBER_WITH_UNIT = /^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.{0,16}?)\s*$/s;

/** `"23.5°C"` → {23.5, "°C"}; `42` → {42, ""}; anything that is not a number first → undefined. */
export function parseReading(data: Json): Reading | undefined {
  if (typeof data === 'number') return Number.isFinite(data) ? { value: data, unit: '' } : undefined;
  if (typeof data !== 'string') return undefined;
  const m = NUMBER_WITH_UNIT.exec(data);
  if (!m) return undefined;
  const value = Number(m[1]);
  return Number.isFinite(value) ? { value, unit: m[2] } : undefined;
}

/** Resources drawn as a big value with a live chart, and the unit pyaiot's devices use. */
export const SENSOR_UNITS: Record<string, string> = {
  temperature: '°C',
  pressure: 'hPa',
  humidity: '%',
  eco2: 'ppm',
  tvoc: 'ppb',
  illuminance: 'lx',
  tsp: 'g/m3',
  tlp: 'g/m3',
  uvindex: '',
};

export interface Position {
  lat: number;
  lng: number;
}

/** `{"lat":..,"lng":..}` as an object or as a JSON string (pyaiot sends the latter); also accepts `lon`. */
export function parsePosition(data: Json): Position | undefined {
  let v: unknown = data;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return undefined;
    }
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const lat = Number(o.lat);
  const lng = Number(o.lng ?? o.lon);
  if (!Number.isFinite(lat) || !Number.isFinite(lng) || Math.abs(lat) > 90 || Math.abs(lng) > 180) return undefined;
  return { lat, lng };
}

export interface ImuSample {
  /** Norm of the accelerometer vector, when present. */
  acc?: number;
  gyro?: [number, number, number];
}

/** pyaiot's imu value: a JSON list of {"type":"acc"|"gyro"|"mag","values":[x,y,z]} (mag is ignored). */
export function parseImu(data: Json): ImuSample | undefined {
  let v: unknown = data;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return undefined;
    }
  }
  if (!Array.isArray(v)) return undefined;
  const out: ImuSample = {};
  for (const item of v) {
    if (typeof item !== 'object' || item === null) continue;
    const { type, values } = item as { type?: unknown; values?: unknown };
    if (!Array.isArray(values) || values.length < 3) continue;
    const [x, y, z] = values.slice(0, 3).map(Number);
    if (![x, y, z].every(Number.isFinite)) continue;
    if (type === 'acc') out.acc = Math.hypot(x, y, z);
    else if (type === 'gyro') out.gyro = [x, y, z];
  }
  return out.acc === undefined && out.gyro === undefined ? undefined : out;
}

/** Any value as one line of text: strings as they are, everything else as JSON. */
export function asText(data: Json): string {
  return typeof data === 'string' ? data : JSON.stringify(data);
}

/** Numbers for a wall screen: at most 2 decimals, no trailing zeros. */
export function formatNumber(n: number): string {
  if (Math.abs(n) >= 10000) return Math.round(n).toString();
  return (Math.round(n * 100) / 100).toString();
}
