// Claiming a device's provisioning PIN (operators and admins; docs/accounts.md, "PIN provisioning"): the PIN the
// device shows, the organisation it joins (from `GET /api/v1/orgs`: an organisation member has one, a system
// admin picks) and the node name it gets → `POST /api/v1/pins/:pin/claim`. The device's next poll receives its
// key; the page never sees the key. Success and the broker's refusals are shown as text.
import { type AccountContext, failureText, listOrgs, rest } from './account-rest.ts';
import { h, setText } from './dom.ts';

/** The PINs the broker issues (its route accepts nothing else). */
export const PIN_PATTERN = /^[0-9]{6}$/;

export class PinClaim {
  readonly el: HTMLElement;
  private readonly pin = h('input', {
    type: 'text',
    id: 'pin-code',
    inputmode: 'numeric',
    autocomplete: 'off',
    maxlength: '6',
    placeholder: '123456',
    'aria-label': 'PIN',
  });
  private readonly org = h('select', { id: 'pin-org', 'aria-label': 'organisation' });
  private readonly node = h('input', {
    type: 'text',
    id: 'pin-node',
    placeholder: 'node name, e.g. sensor-7',
    'aria-label': 'node name',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  private readonly submit = h('button', { type: 'submit', class: 'primary', id: 'pin-submit' }, 'Claim');
  private readonly result = h('p', { class: 'acct-status', id: 'pin-result', role: 'status' });

  constructor(private readonly ctx: AccountContext) {
    const form = h('form', { class: 'acct-form', id: 'pin-form' }, this.pin, this.org, this.node, this.submit);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.claim().catch((err: unknown) => this.say(`Not claimed: ${failureText(err)}`, 'error'));
    });
    this.el = h(
      'section',
      { class: 'acct-section', id: 'pin-claim' },
      h('h3', {}, 'Claim a device PIN'),
      h(
        'p',
        { class: 'acct-hint' },
        'A new device without a key shows a 6-digit PIN. Claim it here: its next poll receives a key for this node.',
      ),
      form,
      this.result,
    );
  }

  async load(): Promise<void> {
    const orgs = await listOrgs(this.ctx);
    const mine = this.ctx.org();
    this.org.replaceChildren(...orgs.map((o) => h('option', { value: o.name, selected: o.id === mine }, o.name)));
    // A member acts in their own organisation only (the broker ignores the choice): nothing to pick.
    this.org.disabled = mine !== undefined;
  }

  reset(): void {
    this.pin.value = '';
    this.node.value = '';
    this.org.replaceChildren();
    setText(this.result, '');
  }

  private async claim(): Promise<void> {
    const pin = this.pin.value.trim();
    if (!PIN_PATTERN.test(pin)) throw new Error('the PIN is the 6 digits the device shows');
    const node = this.node.value.trim();
    if (node === '') throw new Error('name the node');
    const body: Record<string, unknown> = { node };
    if (this.ctx.org() === undefined && this.org.value !== '') body.org = this.org.value;
    this.submit.disabled = true;
    try {
      const answer = await rest(this.ctx.base, `/api/v1/pins/${pin}/claim`, {
        method: 'POST',
        token: this.ctx.token(),
        body,
      });
      const named = typeof answer.node === 'string' ? answer.node : node;
      this.say(`PIN ${pin} claimed: the device gets the key of node ${named} on its next poll.`, 'ok');
      this.pin.value = '';
      this.node.value = '';
    } finally {
      this.submit.disabled = false;
    }
  }

  private say(text: string, kind: 'ok' | 'error'): void {
    this.result.dataset.kind = kind;
    setText(this.result, text);
  }
}
