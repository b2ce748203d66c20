import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { nixCacheUrl, parseCacheUrl, type CacheUrl } from '../../src/core/cache-url.js';
import { resolveConfig } from '../../src/core/config.js';
import {
  CONFIG_KEYS,
  ENV_NAMES,
  OPTIONS,
  optionHelp,
  type OptionKey,
  type OptionSpec,
} from '../../src/core/options.js';
import { CachectlError } from '../../src/core/errors.js';
import { formatSha256, parseSha256 } from '../../src/core/hash.js';
import { narString } from '../../src/core/nar.js';
import { parseNarInfo, renderNarInfo } from '../../src/core/narinfo.js';
import { nix32Decode, nix32Encode } from '../../src/core/nix32.js';
import { NIX_NARINFO, NIX_NARINFO_NO_REFS, NIX_PUBLIC_KEY } from '../fixtures/narinfos.js';
import {
  fingerprint,
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  sign,
  verifySignature,
} from '../../src/core/signing.js';
import { hashPartOf, parseStorePath } from '../../src/core/store-path.js';
import { partSizeFor } from '../../src/cache/s3.js';

const HOUR = 3600_000;
const sha256 = (text: string) => createHash('sha256').update(text).digest();

function assertCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CachectlError, `expected a CachectlError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

describe('nix32', () => {
  // Vectors printed by `nix hash to-base32` (Nix 2.8); test/nix-oracle.test.ts re-checks them against Nix.
  const vectors: [string, string][] = [
    ['', '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'],
    ['abc', '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
  ];
  for (const [input, expected] of vectors) {
    it(`encodes sha256(${JSON.stringify(input)})`, () => {
      assert.equal(nix32Encode(sha256(input)), expected);
      assert.deepEqual(nix32Decode(expected), sha256(input));
    });
  }
  it('round-trips every length a store uses', () => {
    for (const size of [1, 5, 20, 32, 64]) {
      const bytes = createHash('sha512').update(String(size)).digest().subarray(0, size);
      assert.deepEqual(nix32Decode(nix32Encode(bytes)), bytes);
    }
  });
  it('rejects letters outside the alphabet and overflowing digits', () => {
    assert.equal(nix32Decode('e'.repeat(52)), undefined);
    assert.equal(nix32Decode('u'.repeat(32)), undefined);
    assert.equal(nix32Decode('z'.repeat(52)), undefined); // 52*5 = 260 bits > 256
    assert.equal(nix32Decode('0'.repeat(51)), undefined);
  });
});

describe('hashes', () => {
  it('reads the three encodings Nix uses for one digest', () => {
    const digest = sha256('x');
    assert.deepEqual(parseSha256(`sha256:${digest.toString('hex')}`), digest);
    assert.deepEqual(parseSha256(formatSha256(digest)), digest);
    assert.deepEqual(parseSha256(`sha256-${digest.toString('base64')}`), digest);
    for (const bad of ['md5:abc', 'sha256:xyz', `sha256-${digest.subarray(1).toString('base64')}`, 'sha256:']) {
      assert.equal(parseSha256(bad), undefined, bad);
    }
  });
});

describe('store paths', () => {
  const hash = '0'.repeat(32);
  it('accepts what Nix accepts', () => {
    for (const name of ['hello-2.12', 'a', 'x+y=z?_.-', 'A'.repeat(211)]) {
      const parsed = parseStorePath(`/nix/store/${hash}-${name}`);
      assert.equal(parsed.name, name);
      assert.equal(parsed.hashPart, hash);
      assert.equal(hashPartOf(parsed.path), hash);
      assert.equal(hashPartOf(parsed.baseName), hash);
    }
  });
  const bad: [string, string, RegExp][] = [
    ['/etc/hostname', 'PATH_NOT_IN_STORE', /not in the Nix store/],
    ['nix/store/x', 'PATH_NOT_IN_STORE', /not in the Nix store/],
    [`/nix/store/${hash}`, 'STORE_PATH_INVALID', /<32-character hash>-<name>/],
    [`/nix/store/${'e'.repeat(32)}-x`, 'STORE_PATH_INVALID', /not nix32/],
    [`/nix/store/${hash}-..`, 'STORE_PATH_INVALID', /is \. or \.\./],
    [`/nix/store/${hash}-a b`, 'STORE_PATH_INVALID', /characters other than/],
    [`/nix/store/${hash}-ü`, 'STORE_PATH_INVALID', /characters other than/],
    [`/nix/store/${hash}-${'a'.repeat(212)}`, 'STORE_PATH_INVALID', /longer than 211/],
    [`/nix/store/${hash}-x/bin/sh`, 'STORE_PATH_INVALID', /inside the store path \/nix\/store\/0+-x; pass that/],
    [`/nix/store/${hash}-x/../../../etc`, 'STORE_PATH_INVALID', /inside the store path/],
    ['/nix/store/../etc/passwd', 'STORE_PATH_INVALID', /not a valid store path/],
  ];
  for (const [path, code, pattern] of bad) {
    it(`rejects ${JSON.stringify(path.slice(0, 60))}`, () => {
      assertCode(() => parseStorePath(path), code, pattern);
    });
  }
});

describe('NAR framing', () => {
  it('pads strings to 8 bytes after a little-endian length', () => {
    assert.equal(narString('').toString('hex'), '0000000000000000');
    assert.equal(narString('(').toString('hex'), '0100000000000000' + '28' + '00'.repeat(7));
    assert.equal(narString('12345678').length, 16);
    assert.equal(narString('123456789').length, 24);
  });
});

describe('narinfo', () => {
  for (const [name, text] of [
    ['with references', NIX_NARINFO],
    ['without references', NIX_NARINFO_NO_REFS],
  ]) {
    it(`renders Nix's narinfo ${name} byte for byte`, () => {
      assert.equal(renderNarInfo(parseNarInfo(text as string, 'golden')), text);
    });
  }
  it('keeps the trailing space of an empty References line', () => {
    assert.match(renderNarInfo(parseNarInfo(NIX_NARINFO_NO_REFS, 'golden')), /^References: \n/m);
  });
  it('orders signatures as Nix does and puts CA last', () => {
    const info = parseNarInfo(NIX_NARINFO_NO_REFS, 'golden');
    info.sigs = ['z-key:AAAA', 'a-key:BBBB'];
    info.ca = 'fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';
    delete info.deriver;
    const lines = renderNarInfo(info).split('\n');
    assert.deepEqual(lines.slice(-4), ['Sig: a-key:BBBB', 'Sig: z-key:AAAA', `CA: ${info.ca}`, '']);
  });
  const malformed: [string, string, RegExp][] = [
    ['no final newline', NIX_NARINFO.trimEnd(), /newline/],
    ['no NarHash', NIX_NARINFO.replace(/^NarHash.*\n/m, ''), /has no NarHash/],
    ['a bad store path', NIX_NARINFO.replace('/nix/store/yrz6', '/nix/store/../'), /StorePath|store path/],
    ['a URL outside nar/', NIX_NARINFO.replace('URL: nar/', 'URL: ../../'), /URL/],
    ['a reference with ..', NIX_NARINFO.replace('References: ms9g', 'References: ../g'), /reference/],
    ['NarSize 0', NIX_NARINFO.replace('NarSize: 1704', 'NarSize: 0'), /NarSize is missing or 0/],
    ['garbage', 'hello\n', /expecting ':'/],
  ];
  for (const [name, text, pattern] of malformed) {
    it(`refuses a narinfo with ${name}`, () => {
      assertCode(() => parseNarInfo(text, 'x.narinfo'), 'NARINFO_INVALID', pattern);
    });
  }
});

describe('signing', () => {
  it("verifies Nix's own signatures over our fingerprint", () => {
    const key = parsePublicKey(NIX_PUBLIC_KEY);
    for (const text of [NIX_NARINFO, NIX_NARINFO_NO_REFS]) {
      const info = parseNarInfo(text, 'golden');
      const refs = info.references.map((ref) => `/nix/store/${ref}`);
      const fp = fingerprint(info.storePath, info.narHash.digest, info.narSize, refs);
      assert.ok(verifySignature([key], fp, info.sigs[0] as string), fp);
      assert.ok(
        !verifySignature([key], fp.replace(`;${info.narSize};`, `;${info.narSize + 1};`), info.sigs[0] as string),
      );
    }
  });
  it('writes the fingerprint with sorted full reference paths', () => {
    const fp = fingerprint('/nix/store/x-a', sha256(''), 8, ['/nix/store/z-b', '/nix/store/c-d']);
    assert.equal(fp, `1;/nix/store/x-a;${formatSha256(sha256(''))};8;/nix/store/c-d,/nix/store/z-b`);
  });
  it("signs as RFC 8032's first Ed25519 test vector", () => {
    const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
    const publicKey = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex');
    const key = parseSecretKey(`rfc8032:${Buffer.concat([seed, publicKey]).toString('base64')}`, 'memory');
    const expected =
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
    assert.equal(sign(key, ''), `rfc8032:${Buffer.from(expected, 'hex').toString('base64')}`);
    assert.ok(verifySignature([{ name: 'rfc8032', key: publicKey }], '', sign(key, '')));
  });
  it('signs deterministically and round-trips the key format', () => {
    const key = generateSecretKey('cache.example.org-1');
    const again = parseSecretKey(`${formatSecretKey(key)}\n`, 'memory');
    assert.equal(formatPublicKey(again), formatPublicKey(key));
    const sig = sign(again, 'hello');
    assert.equal(sig, sign(key, 'hello'));
    assert.ok(verifySignature([parsePublicKey(formatPublicKey(key))], 'hello', sig));
  });
  const key = generateSecretKey('k');
  const full = Buffer.concat([key.seed, key.publicKey]);
  const badKeys: [string, string, RegExp][] = [
    ['empty', '', /malformed/],
    ['no name', `:${full.toString('base64')}`, /malformed/],
    ['no colon', full.toString('base64'), /malformed/],
    ['not base64', 'k:!!!', /malformed/],
    ['a public key', formatPublicKey(key), /32 bytes, not 64.*public key/],
    ['63 bytes', `k:${full.subarray(1).toString('base64')}`, /63 bytes, not 64/],
    ['a wrong public half', `k:${Buffer.concat([key.seed, Buffer.alloc(32)]).toString('base64')}`, /public half/],
  ];
  for (const [name, text, pattern] of badKeys) {
    it(`refuses a secret key that is ${name}, naming the file but not the key`, () => {
      assertCode(() => parseSecretKey(text, '/etc/keys/cache.sec'), 'SECRET_KEY_INVALID', pattern);
      try {
        parseSecretKey(text, '/etc/keys/cache.sec');
      } catch (err) {
        assert.match((err as Error).message, /\/etc\/keys\/cache\.sec/);
        if (text.length > 8)
          assert.ok(!(err as Error).message.includes(text.slice(2)), 'the key leaked into the message');
      }
    });
  }
});

describe('cache URLs', () => {
  it('reads file:// and s3:// with Nix parameters', () => {
    assert.deepEqual(parseCacheUrl('file:///var/cache/nix/'), { kind: 'file', dir: '/var/cache/nix', fsync: true });
    assert.deepEqual(parseCacheUrl('file:///tmp/c?fsync=false'), { kind: 'file', dir: '/tmp/c', fsync: false });
    assertCode(() => parseCacheUrl('file:///tmp/c?fsync=no'), 'CACHE_URL_INVALID', /fsync=no: use fsync=true/);
    assertCode(
      () => parseCacheUrl('file:///tmp/c?compression=xz'),
      'CACHE_URL_INVALID',
      /unknown parameter compression/,
    );
    assert.deepEqual(parseCacheUrl('s3://my-bucket?endpoint=127.0.0.1:9000&scheme=http&prefix=/a/b/'), {
      kind: 's3',
      bucket: 'my-bucket',
      endpoint: 'http://127.0.0.1:9000',
      region: 'us-east-1',
      prefix: 'a/b/',
      forcePathStyle: true,
      checksums: 'WHEN_REQUIRED',
      requestTimeoutMs: 120_000,
    });
    const fast = parseCacheUrl('s3://b-1?endpoint=127.0.0.1:9000&request-timeout=2s');
    assert.equal(fast.kind === 's3' && fast.requestTimeoutMs, 2000);
    const r2 = parseCacheUrl('s3://cache?endpoint=https://acct.r2.cloudflarestorage.com&region=auto');
    assert.equal(r2.kind === 's3' && r2.region, 'auto');
    const aws = parseCacheUrl('s3://cache?region=eu-west-1');
    assert.ok(
      aws.kind === 's3' && !aws.forcePathStyle && aws.checksums === 'WHEN_SUPPORTED' && aws.endpoint === undefined,
    );
  });
  it("takes Nix's S3 form, the prefix as the path, and ?prefix= as its alias", () => {
    const expected = parseCacheUrl('s3://my-bucket?endpoint=http://127.0.0.1:9000&prefix=a/b');
    assert.equal(expected.kind === 's3' && expected.prefix, 'a/b/');
    for (const text of [
      's3://my-bucket/a/b?endpoint=http://127.0.0.1:9000',
      's3://my-bucket/a/b/?endpoint=http://127.0.0.1:9000',
      's3://my-bucket/a/b?endpoint=http://127.0.0.1:9000&prefix=/a/b/',
      's3://my-bucket/a/b?endpoint=http://127.0.0.1:9000&addressing-style=auto',
    ]) {
      assert.deepEqual(parseCacheUrl(text), expected, text);
    }
    const spaced = parseCacheUrl('s3://bkt/team%20a/x');
    assert.equal(spaced.kind === 's3' && spaced.prefix, 'team a/x/');
    assertCode(() => parseCacheUrl('s3://bkt/a?prefix=b'), 'CACHE_URL_INVALID', /two prefixes, a in its path and b/);
  });
  it('prints the URL Nix reads: prefix as path, only the parameters Nix knows, none that are defaults', () => {
    const cases: [string, string][] = [
      ['s3://bkt', 's3://bkt'],
      ['s3://bkt?region=eu-west-1', 's3://bkt?region=eu-west-1'],
      ['s3://bkt?prefix=a/b&region=us-east-1', 's3://bkt/a/b'],
      [
        's3://bkt/cache?endpoint=127.0.0.1:9000&scheme=http&checksum=when-required&request-timeout=5s',
        's3://bkt/cache?endpoint=http://127.0.0.1:9000',
      ],
      [
        's3://bkt?endpoint=https://r2.example&region=auto&profile=ci',
        's3://bkt?endpoint=https://r2.example&region=auto&profile=ci',
      ],
      ['s3://bkt?addressing-style=path', 's3://bkt?addressing-style=path'],
      [
        's3://bkt?endpoint=https://h.example&addressing-style=virtual',
        's3://bkt?endpoint=https://h.example&addressing-style=virtual',
      ],
      ['s3://bkt/team%20a', 's3://bkt/team%20a'],
      ['file:///var/cache/nix?fsync=false', 'file:///var/cache/nix'],
    ];
    // What Nix reads of it, which the printed URL must keep.
    const forNix = (url: CacheUrl) =>
      url.kind === 'file'
        ? url.dir
        : [url.bucket, url.prefix, url.region, url.endpoint, url.forcePathStyle, url.profile];
    for (const [given, printed] of cases) {
      const url = nixCacheUrl(parseCacheUrl(given));
      assert.equal(url, printed, given);
      assert.deepEqual(forNix(parseCacheUrl(url)), forNix(parseCacheUrl(given)), given);
    }
  });
  for (const bad of [
    '/tmp/x',
    'http://x/y',
    'file://host/x',
    'file:///',
    's3://A_B',
    's3://bkt/a/../b',
    's3://bkt/a/%2e%2e/b',
    's3://bkt/a//b',
    's3://bkt?compression=xz',
    's3://bkt?prefix=a/../b',
    's3://bkt?addressing-style=sideways',
    's3://bkt?endpoint=h&scheme=ftp',
    's3://bkt?request-timeout=soon',
    's3://bkt?request-timeout=0s',
  ]) {
    it(`refuses ${bad}`, () => {
      assertCode(() => parseCacheUrl(bad), 'CACHE_URL_INVALID', /expected file:\/\/\/DIR or s3:\/\//);
    });
  }
});

describe('configuration', () => {
  it('takes flags over environment over file over defaults', () => {
    const file = {
      name: 'c.json',
      text: JSON.stringify({ to: 'file:///f', jobs: 3, compression: 'xz', secretKeyFiles: ['/k'] }),
    };
    const fromFile = resolveConfig({}, {}, file);
    assert.deepEqual(
      [fromFile.cacheUrl, fromFile.jobs, fromFile.compression, fromFile.secretKeyFiles],
      [{ kind: 'file', dir: '/f', fsync: true }, 3, 'xz', ['/k']],
    );
    const fromEnv = resolveConfig({}, { CACHECTL_JOBS: '5', CACHECTL_SECRET_KEY_FILES: '/a:/b' }, file);
    assert.deepEqual([fromEnv.jobs, fromEnv.secretKeyFiles], [5, ['/a', '/b']]);
    const fromFlags = resolveConfig({ jobs: '7', compression: 'none' }, { CACHECTL_JOBS: '5' }, file);
    assert.deepEqual([fromFlags.jobs, fromFlags.compression], [7, 'none']);
    const defaults = resolveConfig({}, {});
    assert.deepEqual(
      [defaults.cacheUrl, defaults.queue, defaults.compression, defaults.jobs],
      [undefined, '/var/lib/cachectl/queue.db', 'zstd', 8],
    );
    assert.ok(Object.isFrozen(defaults));
  });
  it('reports every problem at once', () => {
    const file = { name: 'c.json', text: JSON.stringify({ compresion: 'zstd', jobs: 'many' }) };
    assert.throws(
      () => resolveConfig({ compression: 'gzip', to: 'ftp://x' }, {}, file),
      (err: unknown) => {
        const message = (err as Error).message;
        for (const part of [
          /unknown key "compresion"/,
          /jobs must be a number/,
          /unknown compression "gzip"; use one of zstd, xz, none/,
          /ftp:/,
        ]) {
          assert.match(message, part);
        }
        return (err as CachectlError).code === 'CONFIG_INVALID';
      },
    );
  });
  it("takes the GC's settings the same way", () => {
    const file = { name: 'c.json', text: JSON.stringify({ olderThan: '100h', grace: '2h', metadataCache: '/m.db' }) };
    const fromFile = resolveConfig({}, {}, file);
    assert.deepEqual([fromFile.olderThanMs, fromFile.graceMs, fromFile.metadataCache], [100 * HOUR, 2 * HOUR, '/m.db']);
    const fromEnv = resolveConfig({}, { CACHECTL_OLDER_THAN: '10h', CACHECTL_GRACE: '0s' }, file);
    assert.deepEqual([fromEnv.olderThanMs, fromEnv.graceMs], [10 * HOUR, 0]);
    const fromFlags = resolveConfig({ olderThan: '1h', grace: '30m' }, { CACHECTL_OLDER_THAN: '10h' }, file);
    assert.deepEqual([fromFlags.olderThanMs, fromFlags.graceMs], [HOUR, HOUR / 2]);
    const defaults = resolveConfig({}, {});
    assert.deepEqual(
      [defaults.olderThanMs, defaults.graceMs, defaults.metadataCache],
      [720 * HOUR, 6 * HOUR, undefined],
    );
    assertCode(() => resolveConfig({ grace: 'soon' }, {}), 'CONFIG_INVALID', /--grace "soon" is not a duration/);
  });
  it('derives every environment name and config key from one table', () => {
    for (const [key, spec] of Object.entries(OPTIONS) as [OptionKey, OptionSpec][]) {
      assert.equal(ENV_NAMES[key], spec.env);
      assert.equal(key in CONFIG_KEYS, spec.notInFile !== true, key);
      assert.match(optionHelp(key), new RegExp(`env ${spec.env}[;,)]`), key);
      if (spec.notInFile !== true) assert.match(optionHelp(key), new RegExp(`config key ${key}[;)]`), key);
    }
    // A config file with every key is taken, each value from the file.
    const values: Record<string, unknown> = {
      to: 'file:///f',
      queue: '/q.db',
      gcRoots: '/r',
      secretKeyFiles: ['/k'],
      jobs: 2,
      compression: 'none',
      narListing: false,
      skipSignedBy: ['cache.nixos.org-1'],
      trustedPublicKeys: ['cache.example.org-1:' + Buffer.alloc(32, 7).toString('base64')],
      signerCommand: 'hsm-signer',
      cacheControl: ['nar=public, max-age=10'],
      contentType: ['log=text/plain'],
      metricsListen: '9108',
      olderThan: '1h',
      grace: '1m',
      metadataCache: '/m.db',
    };
    assert.deepEqual(Object.keys(values).sort(), Object.keys(CONFIG_KEYS).sort());
    const config = resolveConfig({}, {}, { name: 'all.json', text: JSON.stringify(values) });
    assert.deepEqual(
      [
        config.queue,
        config.gcRoots,
        config.secretKeyFiles,
        config.jobs,
        config.compression,
        config.narListing,
        config.skipSignedBy,
        config.trustedPublicKeys.map((key) => key.name),
        config.metricsListen?.port,
        config.metadataCache,
      ],
      ['/q.db', '/r', ['/k'], 2, 'none', false, ['cache.nixos.org-1'], ['cache.example.org-1'], 9108, '/m.db'],
    );
  });
  it('takes headers by class of object, from flags or newline-separated in the environment, and names a bad one', () => {
    const defaults = resolveConfig({}, {}).objectHeaders;
    assert.equal(defaults.nar.cacheControl, 'public, max-age=31536000, immutable');
    assert.equal(defaults.narinfo.cacheControl, 'public, max-age=300');
    assert.equal(defaults.stateJson.cacheControl, 'no-store');
    const fromEnv = resolveConfig(
      {},
      {
        CACHECTL_CACHE_CONTROL: 'narinfo=public, max-age=60\nlisting=no-cache',
        CACHECTL_CONTENT_TYPE: 'log=text/plain',
      },
    ).objectHeaders;
    assert.deepEqual(
      [fromEnv.narinfo, fromEnv.listing.cacheControl, fromEnv.log, fromEnv.nar],
      [
        { contentType: 'text/x-nix-narinfo', cacheControl: 'public, max-age=60' },
        'no-cache',
        { contentType: 'text/plain', cacheControl: 'public, max-age=300' },
        defaults.nar,
      ],
    );
    assertCode(
      () => resolveConfig({ cacheControl: ['lease=no-cache', 'nar='] }, {}),
      'CONFIG_INVALID',
      /cache-control "lease=no-cache" must be CLASS=VALUE, CLASS one of narinfo, cacheInfo, nar, listing, log, realisation\ncache-control "nar=" has an empty value/,
    );
  });
  it('takes trusted public keys as nix.conf writes them, and names one that is not a key', () => {
    const key = `a-1:${Buffer.alloc(32, 1).toString('base64')}`;
    const other = `b-1:${Buffer.alloc(32, 2).toString('base64')}`;
    const config = resolveConfig({}, { CACHECTL_TRUSTED_PUBLIC_KEYS: `${key} ${other}` });
    assert.deepEqual(
      config.trustedPublicKeys.map((trusted) => trusted.name),
      ['a-1', 'b-1'],
    );
    assertCode(
      () => resolveConfig({ trustedPublicKeys: ['a-1:c2hvcnQ='] }, {}),
      'CONFIG_INVALID',
      /trusted-public-key: public key "a-1:c2hvcnQ=" is not NAME:BASE64 of 32 bytes/,
    );
  });
  it('takes a true or false: from a flag, the environment, or a JSON boolean in the file', () => {
    assert.equal(resolveConfig({}, {}).narListing, true);
    assert.equal(resolveConfig({ narListing: 'false' }, {}).narListing, false);
    assert.equal(resolveConfig({}, { CACHECTL_NAR_LISTING: 'false' }).narListing, false);
    assertCode(() => resolveConfig({ narListing: 'no' }, {}), 'CONFIG_INVALID', /nar-listing "no" must be true or/);
    const file = { name: 'c.json', text: JSON.stringify({ narListing: 'false' }) };
    assertCode(() => resolveConfig({}, {}, file), 'CONFIG_INVALID', /key narListing must be a boolean/);
  });
  it('rejects job counts outside 1..256', () => {
    for (const jobs of ['0', '-1', '1.5', 'x', '257'])
      assertCode(() => resolveConfig({ jobs }, {}), 'CONFIG_INVALID', /jobs/);
  });
});

describe('multipart part size', () => {
  it('keeps every NAR under 10,000 parts', () => {
    for (const size of [0, 1, 8 << 20, 80e9, 5e12]) {
      const part = partSizeFor(size);
      assert.ok(part >= 5 << 20);
      assert.ok(Math.ceil(size / part) <= 10_000, `size ${size}`);
    }
  });
});
