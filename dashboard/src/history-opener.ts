// Opens the history view of a resource on demand. The view and uPlot are a separate chunk loaded with the first
// open (dynamic import), so the card grid's first paint and its live charts carry none of it.
import type { HistoryTarget, HistoryView, HistoryViewDeps } from './history-view.ts';
import type { NodeFrame } from './model.ts';

export class HistoryOpener {
  private view?: HistoryView;
  private loading?: Promise<HistoryView>;

  constructor(
    private readonly root: HTMLElement,
    private readonly deps: HistoryViewDeps,
  ) {}

  open(target: HistoryTarget): void {
    this.load()
      .then((view) => view.open(target))
      .catch((err: unknown) => console.warn('mycelium: the history view did not load', err));
  }

  /** Live frames reach the view only while it is open (the hot path pays one property check otherwise). */
  frame(msg: NodeFrame): void {
    if (this.view?.isOpen) this.view.frame(msg);
  }

  close(): void {
    this.view?.close();
  }

  private load(): Promise<HistoryView> {
    this.loading ??= import('./history-view.ts').then(({ HistoryView }) => {
      const view = new HistoryView(this.deps);
      this.root.append(view.el);
      this.view = view;
      return view;
    });
    // A failed load (a network blip fetching the chunk) may be retried by the next click.
    this.loading.catch(() => {
      this.loading = undefined;
    });
    return this.loading;
  }
}
