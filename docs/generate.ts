/**
 * Writes the generated parts of docs/ (see docs/blocks.ts): the benchmarks' tables from bench/results/*.json
 * (what the benchmarks wrote last) and the settings table from src/core/options.ts; and
 * monitoring/grafana-dashboard.json from docs/dashboard.ts.
 *
 *   npm run docs
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/nix.js';
import { GENERATED_FILES, GENERATED_PAGES, renderBlocks } from './blocks.js';

/** Writes `file` (relative to the repository) as `render` makes it from what it holds now, and says if it changed. */
function write(file: string, render: (before: string | undefined) => string): void {
  const path = join(REPO, file);
  const before = existsSync(path) ? readFileSync(path, 'utf8') : undefined;
  const after = render(before);
  writeFileSync(path, after);
  process.stdout.write(`${file}: ${after === before ? 'already up to date' : 'written'}\n`);
}

for (const { page, blocks } of GENERATED_PAGES) write(page, (before) => renderBlocks(page, before ?? '', blocks()));
for (const { file, render } of GENERATED_FILES) write(file, render);
