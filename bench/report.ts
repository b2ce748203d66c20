/**
 * bench/report: writes the README's performance tables from bench/results/*.json (what the benchmarks wrote
 * last). The README's figures come from here only; test/readme.test.ts fails when they differ.
 *
 *   npm run bench:report
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/nix.js';
import { readResults, renderReadme } from './tables.js';

const readmeFile = join(REPO, 'README.md');
const before = readFileSync(readmeFile, 'utf8');
const after = renderReadme(before, readResults(join(REPO, 'bench/results')));
writeFileSync(readmeFile, after);
process.stdout.write(
  after === before ? 'README.md: tables already up to date\n' : 'README.md: tables written from bench/results\n',
);
