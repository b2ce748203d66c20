import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readResults, renderReadme } from '../../bench/tables.js';
import { REPO } from '../helpers/nix.js';

describe('README', () => {
  it('has the performance tables of bench/results/*.json, as npm run bench:report writes them', () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    // Not deepEqual on the whole text: a differing line is easier to read than a 60 KB diff.
    const generated = renderReadme(readme, readResults(join(REPO, 'bench/results'))).split('\n');
    const lines = readme.split('\n');
    const first = generated.findIndex((line, i) => line !== lines[i]);
    assert.equal(
      first,
      -1,
      `README.md line ${first + 1} is not what bench/results says (run npm run bench:report):\n  README:  ` +
        `${lines[first]}\n  results: ${generated[first]}`,
    );
    assert.equal(lines.length, generated.length);
  });
});
