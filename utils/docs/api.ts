// npm run docs:api — writes docs/api.md from the broker's route schemas (through its OpenAPI document).
// With --check, writes nothing and exits 1 when docs/api.md differs (test/api-docs.test.ts does the same).
import { readFileSync, writeFileSync } from 'node:fs';
import { openApiDocument } from '../../services/broker/openapi.ts';
import { openApiMarkdown } from './openapi-markdown.ts';

export const API_DOC = new URL('../../docs/api.md', import.meta.url);

export async function renderApiDoc(): Promise<string> {
  return openApiMarkdown(await openApiDocument());
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const text = await renderApiDoc();
  if (process.argv.includes('--check')) {
    const current = readFileSync(API_DOC, 'utf8');
    if (current !== text) {
      process.stderr.write('docs/api.md is out of date: run npm run docs:api\n');
      process.exit(1);
    }
  } else {
    writeFileSync(API_DOC, text);
    process.stdout.write('wrote docs/api.md\n');
  }
}
