// Small pieces the Account dialog's pages share (keys-page.ts, members-page.ts).
import { h } from './dom.ts';

/**
 * Runs `act` with `button` disabled. `act` resolves once the change is made; what follows it (a message, reloading
 * the list) belongs after it, so a failed reload is never reported as a failed change.
 */
export function runBusy(button: HTMLButtonElement, act: () => Promise<unknown>, failed: (err: unknown) => void): void {
  button.disabled = true;
  act().catch((err: unknown) => {
    button.disabled = false;
    failed(err);
  });
}

/**
 * Asks once more in the row itself (a browser confirm() would block the page and its live values): a warning, a
 * `<cls>-confirm` button that runs `act`, and a `<cls>-cancel` button that puts `back` again.
 */
export function confirmInRow(
  cell: HTMLElement,
  back: HTMLElement,
  o: { cls: string; warning: string; yes: string; act: () => Promise<unknown>; failed: (err: unknown) => void },
): void {
  const yes = h('button', { type: 'button', class: `${o.cls}-confirm danger` }, o.yes);
  const no = h('button', { type: 'button', class: `${o.cls}-cancel` }, 'Cancel');
  no.addEventListener('click', () => cell.replaceChildren(back));
  yes.addEventListener('click', () => runBusy(yes, o.act, o.failed));
  cell.replaceChildren(h('span', { class: 'acct-hint' }, o.warning), yes, no);
}
