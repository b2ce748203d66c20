import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { GENERATED_FILES, GENERATED_PAGES, renderBlocks, settingsTable } from '../../docs/blocks.js';
import { OPTIONS } from '../../src/core/options.js';
import { REPO } from '../helpers/nix.js';

describe('docs', () => {
  for (const { page, blocks } of GENERATED_PAGES) {
    it(`${page} has its generated parts as npm run docs writes them`, () => {
      const text = readFileSync(join(REPO, page), 'utf8');
      // Not deepEqual on the whole text: a differing line is easier to read than a page-long diff.
      const generated = renderBlocks(page, text, blocks()).split('\n');
      const lines = text.split('\n');
      const first = generated.findIndex((line, i) => line !== lines[i]);
      assert.equal(
        first,
        -1,
        `${page} line ${first + 1} is not what its source says (run npm run docs):\n  page:      ` +
          `${lines[first]}\n  generated: ${generated[first]}`,
      );
      assert.equal(lines.length, generated.length);
    });
  }

  for (const { file, render } of GENERATED_FILES) {
    it(`${file} is as npm run docs writes it`, () => {
      assert.ok(
        readFileSync(join(REPO, file), 'utf8') === render(),
        `${file} is not what its source says (run npm run docs)`,
      );
    });
  }

  it('lists every setting, with its environment variable', () => {
    const table = settingsTable();
    for (const spec of Object.values(OPTIONS)) assert.ok(table.includes(`\`${spec.env}\``), spec.env);
  });

  it('keeps the README short and links every page of docs/', () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    assert.ok(Buffer.byteLength(readme) <= 12 * 1024, `README.md is ${Buffer.byteLength(readme)} bytes`);
    for (const page of ['operating', 'configuration', 'errors', 'gc', 'architecture', 'testing', 'benchmarks']) {
      assert.ok(readme.includes(`(docs/${page}.md)`), `README.md links docs/${page}.md`);
    }
  });
});
