// Opens an agent's console panel on demand. The panel (and its styles) is a chunk of its own, loaded with the
// first open like the history view (history-opener.ts), so the card grid's first paint carries only the small
// request router (console-client.ts), which must see every console frame from the start.
import type { Json } from '../../services/protocol/messages.ts';
import type { ConsoleClient } from './console-client.ts';
import type { ConsoleOpenRequest, ConsolePanel } from './console-panel.ts';

export class ConsoleOpener {
  private panel?: ConsolePanel;
  private loading?: Promise<ConsolePanel>;

  constructor(
    private readonly root: HTMLElement,
    private readonly client: ConsoleClient,
  ) {}

  open(req: ConsoleOpenRequest): void {
    this.load()
      .then((panel) => panel.openFor(req))
      .catch((err: unknown) => console.warn('mycelium: the console panel did not load', err));
  }

  /** A node changed: an open panel of that node follows its `console` resource (no load when none is open). */
  nodeChanged(uid: string, capability: Json | undefined): void {
    this.panel?.capabilityChanged(uid, capability);
  }

  /** Logout or a new token: the panel forgets the previous user's session. */
  reset(): void {
    this.panel?.reset();
  }

  private load(): Promise<ConsolePanel> {
    this.loading ??= import('./console-panel.ts').then(({ ConsolePanel }) => {
      const panel = new ConsolePanel(this.client);
      this.root.append(panel.el);
      this.panel = panel;
      return panel;
    });
    // A failed load (a network blip fetching the chunk) may be retried by the next click.
    this.loading.catch(() => {
      this.loading = undefined;
    });
    return this.loading;
  }
}
