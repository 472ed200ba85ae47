// docs/api.md is rendered from the broker's route schemas (npm run docs:api): it must say what the code does.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_DOC, renderApiDoc } from '../utils/docs/api.ts';

describe('docs/api.md', () => {
  it('is what npm run docs:api renders from the current route schemas (run it after changing a route)', async () => {
    expect(readFileSync(API_DOC, 'utf8')).toBe(await renderApiDoc());
  });
});
