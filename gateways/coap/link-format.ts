// RFC 6690 CoRE Link Format, parsed without I/O so the gateway, the tests and any tool can share it.
//   Link       = link-value-list
//   link-value = "<" URI-Reference ">" *( ";" link-param )
//   link-param = parmname [ "=" ( ptoken / quoted-string ) ]     (RFC 6690 §2, RFC 5988 §5)
// pyaiot split the body on every "," and ";" after removing all spaces, which breaks on quoted values such as
// title="a, b;c". This scanner honours quoting, so commas and semicolons inside quotes stay in the value.

export interface Link {
  /** The URI-Reference between < and >, e.g. "/temperature". */
  target: string;
  /** Attributes in order of appearance; a flag without "=" (like `obs`) has the value `true`. */
  attrs: Record<string, string | true>;
  /** RFC 7641 §6: the resource is observable. */
  obs: boolean;
}

export interface LinkFormatResult {
  links: Link[];
  /** One message per link that could not be parsed (the scanner skips to the next link and goes on). */
  errors: string[];
}

const WS = new Set([' ', '\t', '\r', '\n']);

/** Parses a link-format document. Never throws: garbage ends up in `errors`. */
export function parseLinkFormat(text: string): LinkFormatResult {
  const links: Link[] = [];
  const errors: string[] = [];
  let i = 0;
  const n = text.length;
  const skipWs = () => {
    while (i < n && WS.has(text[i])) i++;
  };
  // After an error, resume at the next "," that is outside quotes and angle brackets.
  const recover = () => {
    let quoted = false;
    let bracket = false;
    while (i < n) {
      const c = text[i];
      if (quoted) {
        if (c === '\\') i++;
        else if (c === '"') quoted = false;
      } else if (bracket) {
        if (c === '>') bracket = false;
      } else if (c === '"') quoted = true;
      else if (c === '<') bracket = true;
      else if (c === ',') {
        i++;
        return;
      }
      i++;
    }
  };

  skipWs();
  while (i < n) {
    const start = i;
    const link = parseLinkValue();
    if (typeof link === 'string') {
      errors.push(`at ${start}: ${link}`);
      recover();
    } else {
      links.push(link);
      skipWs();
      if (i < n) {
        if (text[i] === ',') i++;
        else {
          errors.push(`at ${i}: expected "," between links, got ${JSON.stringify(text[i])}`);
          recover();
        }
      }
    }
    skipWs();
  }
  return { links, errors };

  function parseLinkValue(): Link | string {
    if (text[i] !== '<') return `expected "<", got ${JSON.stringify(text.slice(i, i + 10))}`;
    const close = text.indexOf('>', i + 1);
    if (close < 0) return 'unterminated "<"';
    const target = text.slice(i + 1, close);
    i = close + 1;
    const attrs: Record<string, string | true> = {};
    for (;;) {
      skipWs();
      if (i >= n || text[i] === ',') break;
      if (text[i] !== ';') return `expected ";" or ",", got ${JSON.stringify(text[i])}`;
      i++;
      skipWs();
      const nameStart = i;
      while (i < n && /[A-Za-z0-9!#$&+\-.^_`|~*]/.test(text[i])) i++;
      const name = text.slice(nameStart, i).toLowerCase();
      if (name.length === 0) return 'empty parameter name';
      skipWs();
      let value: string | true = true;
      if (text[i] === '=') {
        i++;
        skipWs();
        if (text[i] === '"') {
          i++;
          let v = '';
          for (;;) {
            if (i >= n) return `unterminated quoted value of "${name}"`;
            const c = text[i++];
            if (c === '"') break;
            if (c === '\\' && i < n) v += text[i++];
            else v += c;
          }
          value = v;
        } else {
          const vStart = i;
          while (i < n && text[i] !== ';' && text[i] !== ',' && !WS.has(text[i])) i++;
          value = text.slice(vStart, i);
        }
      }
      // RFC 5988 §5.3: later occurrences of the same parameter are ignored.
      if (!Object.hasOwn(attrs, name)) attrs[name] = value;
    }
    return { target, attrs, obs: Object.hasOwn(attrs, 'obs') };
  }
}

/**
 * The gateway's resource name for a link target: the path without its leading "/" (pyaiot's convention).
 * Returns undefined for links that are not resources of this node: `/.well-known/core` itself, the root `/`,
 * and absolute URIs (they point at another host).
 */
export function resourceName(target: string): string | undefined {
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(target)) return undefined;
  const path = target.split(/[?#]/)[0];
  const name = path.replace(/^\/+/, '');
  if (name === '' || name === '.well-known/core') return undefined;
  return name;
}
