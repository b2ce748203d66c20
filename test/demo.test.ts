/**
 * The README's first command, `npm run demo` (test/demo.sh): a daemon, a nix-build whose post-build hook queues
 * what it builds, the upload, then Nix verifying the cache and substituting the closure into a fresh store.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO, requireNix, run, tempDir, withNix } from './helpers/nix.js';

describe(withNix('the demo (npm run demo)'), () => {
  it('builds through the hook, the daemon uploads, Nix verifies the cache and substitutes from it', async () => {
    requireNix();
    const dir = tempDir('demo');
    const demo = await run('bash', [join(REPO, 'test/demo.sh')], { ...process.env, CACHECTL_DEMO_DIR: dir });
    assert.equal(demo.code, 0, `${demo.stdout}\n${demo.stderr}`);
    // the hello program and the greeting it references, each verified and substituted
    assert.match(demo.stdout, /==> nix store verify: signatures by demo-cache-1:/);
    const substituted = demo.stdout.match(/now in the fresh store: \/nix\/store\/\S+/g) ?? [];
    assert.equal(substituted.length, 2, demo.stdout);
    assert.equal(readdirSync(join(dir, 'cache')).filter((name) => name.endsWith('.narinfo')).length, 2);
    assert.match(demo.stdout, /==> done: the cache is .* \(2 narinfos\)/);
  });
});
