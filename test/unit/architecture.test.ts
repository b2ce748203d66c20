import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

// The compiled tests live in dist/test/unit; the sources they check are read from the checkout.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const src = join(root, 'src');

/** Every module of src/ with the src/ modules it imports (type-only imports included: they are seams too). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter(
    (file) => /\.c?ts$/.test(file) && !file.endsWith('.d.ts'),
  );
  for (const file of files) {
    const text = readFileSync(join(src, file), 'utf8');
    // static imports and exports, and `await import('…')` of the commands
    const imports = [...text.matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)'|\bimport\('(\.[^']+)'\)/gms)].map(
      (match) => relative(src, resolve(dirname(join(src, file)), (match[1] ?? match[2] ?? '').replace(/\.js$/, '.ts'))),
    );
    graph.set(file, imports);
  }
  return graph;
}

/** The first import circle found, as the modules around it, or undefined. */
function findCircle(graph: Map<string, string[]>): string[] | undefined {
  const done = new Set<string>();
  const onPath: string[] = [];
  const visit = (file: string): string[] | undefined => {
    const at = onPath.indexOf(file);
    if (at >= 0) return [...onPath.slice(at), file];
    if (done.has(file)) return undefined;
    onPath.push(file);
    for (const next of graph.get(file) ?? []) {
      const circle = visit(next);
      if (circle !== undefined) return circle;
    }
    onPath.pop();
    done.add(file);
    return undefined;
  };
  for (const file of graph.keys()) {
    const circle = visit(file);
    if (circle !== undefined) return circle;
  }
  return undefined;
}

describe('architecture', () => {
  const graph = importGraph();

  it('reads the modules it checks', () => {
    assert.ok(graph.size > 30, `found only ${graph.size} modules under ${src}`);
    assert.ok(graph.get('bin/cachectl.cts')?.includes('bin/main.ts'), 'bin/cachectl.cts imports bin/main.ts');
    assert.ok(graph.get('bin/main.ts')?.includes('core/config.ts'), 'bin/main.ts imports core/config.ts');
    assert.ok(graph.get('bin/main.ts')?.includes('cli/push.ts'), 'bin/main.ts imports cli/push.ts when run');
  });

  it('has no import circle', () => {
    assert.equal(findCircle(graph)?.join(' → '), undefined);
  });

  it('finds a circle when there is one', () => {
    const circular = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
    ]);
    assert.deepEqual(findCircle(circular), ['a.ts', 'b.ts', 'c.ts', 'a.ts']);
  });

  it('keeps the layer rule: core imports only core; only bin imports cli', () => {
    for (const [file, imports] of graph) {
      const layer = file.split('/')[0];
      for (const imported of imports) {
        const importedLayer = imported.split('/')[0];
        if (layer === 'core') assert.equal(importedLayer, 'core', `${file} imports ${imported}`);
        if (importedLayer === 'cli') assert.ok(layer === 'cli' || layer === 'bin', `${file} imports ${imported}`);
        if (importedLayer === 'bin' && layer !== 'bin') assert.fail(`${file} imports ${imported}`);
      }
    }
  });
});
