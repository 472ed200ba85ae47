// What the page remembers across reloads (localStorage): theme, filters, hidden resources, dismissed nodes.
const KEY = 'mycelium.dashboard.v1';

export interface Settings {
  theme: 'dark' | 'light';
  query: string;
  status: 'all' | 'online' | 'offline';
  hidden: string[];
  /** Offline nodes the user dismissed, with the lastSeen they had: they stay away until they come back. */
  dismissed: Record<string, number>;
}

const DEFAULTS: Settings = { theme: 'dark', query: '', status: 'all', hidden: [], dismissed: {} };

export function loadSettings(): Settings {
  try {
    const raw: unknown = JSON.parse(localStorage.getItem(KEY) ?? '{}');
    if (typeof raw !== 'object' || raw === null) return { ...DEFAULTS };
    const r = raw as Partial<Settings>;
    return {
      theme: r.theme === 'light' ? 'light' : 'dark',
      query: typeof r.query === 'string' ? r.query : '',
      status: r.status === 'online' || r.status === 'offline' ? r.status : 'all',
      hidden: Array.isArray(r.hidden) ? r.hidden.filter((x): x is string => typeof x === 'string') : [],
      dismissed:
        typeof r.dismissed === 'object' && r.dismissed !== null && !Array.isArray(r.dismissed) ? r.dismissed : {},
    };
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(s: Settings): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    // Storage full or disabled (private mode): the page still works, it just forgets.
  }
}
