import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PathInfo } from '../../src/nix/local-store.js';
import { uploadOrder } from '../../src/upload/push.js';

/** A path named `name` of `narSize` bytes referring to `references` (names). */
const path = (name: string, narSize: number, references: string[] = []): PathInfo => ({
  path: `/nix/store/${name}`,
  narHash: Buffer.alloc(32),
  narSize,
  references: references.map((ref) => `/nix/store/${ref}`),
  sigs: [],
});
const names = (paths: PathInfo[]) => paths.map((info) => info.path.slice('/nix/store/'.length));

describe('the order NARs start in', () => {
  it('deepest first (the longest chain of narinfos that must follow), then largest first', () => {
    // app → lib → libc, app → big, tool → libc; self-references and references outside the push count for nothing
    const paths = [
      path('app', 10, ['lib', 'big', 'app', 'elsewhere']),
      path('tool', 20, ['libc']),
      path('big', 900, ['big']),
      path('lib', 30, ['libc']),
      path('libc', 40),
      path('docs', 50),
    ];
    assert.deepEqual(names(uploadOrder(paths)), ['libc', 'big', 'lib', 'docs', 'tool', 'app']);
  });

  it('orders a chain of 100,000 paths from its bottom, shuffled as it comes', () => {
    const length = 100_000;
    const chain = Array.from({ length }, (_, i) => path(`link-${i}`, 100 + (i % 7), i === 0 ? [] : [`link-${i - 1}`]));
    const shuffled = chain.map((info, i) => ({ info, key: (i * 7919) % length })).sort((a, b) => a.key - b.key);
    const order = names(uploadOrder(shuffled.map(({ info }) => info)));
    assert.deepEqual(order, names(chain));
  });

  it('lists every path once, also in a diamond', () => {
    const paths = [
      path('top', 1, ['left', 'right']),
      path('left', 1, ['base']),
      path('right', 2, ['base']),
      path('base', 1),
    ];
    assert.deepEqual(names(uploadOrder(paths)), ['base', 'right', 'left', 'top']);
  });
});
