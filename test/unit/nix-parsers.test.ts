/**
 * cachectl's parsers against Nix's own rules, case by case, each with where the rule comes from: NixOS/nix
 * src/libstore/path.cc (store path names), src/libutil/hash.cc and its tests src/libutil-tests/hash.cc and
 * base-n.cc (hashes, base64), src/libstore/nar-info.cc (narinfos), src/libstore/content-address.cc (CA), and
 * narinfos as harmonia and niks3 write them, and build logs as bzip2 writes them. The GC reads narinfos other tools wrote: one Nix accepts must
 * parse, one Nix rejects must be refused (and so never acted on).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CachectlError } from '../../src/core/errors.js';
import { parseHash, type HashAlgorithm } from '../../src/core/hash.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { nix32Encode } from '../../src/core/nix32.js';
import { parseStorePath } from '../../src/core/store-path.js';
import { readBuildLog } from '../../src/nix/build-log.js';
import { resolveStorePath } from '../../src/nix/resolve.js';
import { narInfoMeta } from '../../src/gc/plan.js';
import { NIX_NARINFO } from '../fixtures/narinfos.js';

const HASH = '0'.repeat(32);

describe("store path names (path.cc's checkName)", () => {
  const accepted = ['.gitignore', '...', '..a', '.x-y', 'a.', 'x-.', 'hello-2.12', '+-._?=', 'A'.repeat(211)];
  for (const name of accepted) {
    it(`accepts ${JSON.stringify(name.slice(0, 20))} (names may start with a period since Nix 2.21)`, () => {
      assert.equal(parseStorePath(`/nix/store/${HASH}-${name}`).name, name);
    });
  }
  const rejected = ['.', '..', '.-x', '..-x', '', 'a b', 'ü', 'a/b', 'A'.repeat(212)];
  for (const name of rejected) {
    it(`rejects ${JSON.stringify(name.slice(0, 20))}`, () => {
      assert.throws(() => parseStorePath(`/nix/store/${HASH}-${name}`), CachectlError);
    });
  }
  it('takes command-line paths in the forms Nix normalises as the path they name', async () => {
    const path = `/nix/store/${HASH}-hello`;
    for (const arg of [
      `${path}/`,
      `/nix//store/${HASH}-hello`,
      `/nix/./store/${HASH}-hello`,
      `/nix/store/../store/${HASH}-hello/`,
    ]) {
      assert.equal(await resolveStorePath(arg, '/nix/store'), path, arg);
    }
  });
});

// RFC 4634 / 3174 / 1321 vectors, as src/libutil-tests/hash.cc uses them.
const VECTORS: [HashAlgorithm, string][] = [
  ['md5', 'abc'],
  ['sha1', 'abc'],
  ['sha256', 'abc'],
  ['sha512', 'abc'],
];

describe("hashes (hash.cc's Hash::parseAnyPrefixed)", () => {
  for (const [algorithm, input] of VECTORS) {
    const digest = createHash(algorithm).update(input).digest();
    it(`reads ${algorithm} in hex (either case), nix32, base64 and SRI`, () => {
      const forms = [
        `${algorithm}:${digest.toString('hex')}`,
        `${algorithm}:${digest.toString('hex').toUpperCase()}`,
        `${algorithm}:${nix32Encode(digest)}`,
        `${algorithm}:${digest.toString('base64')}`,
        `${algorithm}-${digest.toString('base64')}`,
      ];
      for (const form of forms) assert.deepEqual(parseHash(form), { algorithm, digest }, form);
    });
  }
  // base-n.cc: "Nix's Base64 implementation has historically accepted trailing garbage"
  it("reads SRI with missing, extra or trailing padding, as Nix's base64 decoder does", () => {
    const digest = createHash('sha512').update('abc').digest();
    const bare = digest.toString('base64').replace(/=+$/, '');
    for (const body of [bare, `${bare}=`, `${bare}==`, `${bare}===`, `${bare}== cheesecake`]) {
      assert.deepEqual(parseHash(`sha512-${body}`), { algorithm: 'sha512', digest }, body);
    }
  });
  it('refuses what Nix refuses', () => {
    const digest = createHash('sha256').update('abc').digest();
    const cases = [
      digest.toString('hex'), // no algorithm
      `sha256:${digest.toString('hex').slice(1)}`, // wrong length
      `sha256:${digest.toString('base64').replace(/=$/, '')}`, // unpadded base64 is the wrong length unless SRI
      `sha256:${'z'.repeat(52)}`, // nix32 overflowing 256 bits
      `sha256:${'e'.repeat(52)}`, // not nix32
      `sha256-${digest.subarray(1).toString('base64')}`, // SRI of the wrong size
      `sha256-${digest.toString('base64').replace('A', '_')}`, // not base64
      `blake3:${digest.toString('hex')}`, // experimental in Nix, unknown to 2.8
      `sha257:${digest.toString('hex')}`,
      'sha256:',
    ];
    for (const text of cases) assert.equal(parseHash(text), undefined, text);
  });
});

// Written by `nix copy` (Nix 2.8): the base of every case below.
const NIX = NIX_NARINFO;
const SIG = 'example-cache-1:yV6yJ5bCaPgK51bKE9uT+9DzXxNjNr7WFQi3+W1ixzqG3y+TWJoxn8/b3TldvG4+11mDGK2bq4wdUwgcAzShCQ==';
const CA = 'fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';
const REFS = 'ms9gx7bx74vq2c5fhvc948q04shp5g11-fixture-lib yrz6dw5nnz86xas3wq4dl2xz14dwrfbc-fixture-app';
const edit = (from: string | RegExp, to: string) => NIX.replace(from, to);
const dropLine = (name: string) => NIX.replace(new RegExp(`^${name}: .*\\n`, 'm'), '');

describe("narinfos (nar-info.cc's NarInfo constructor)", () => {
  type Parsed = ReturnType<typeof parseNarInfo>;
  // name, narinfo, what to look at, what it must be
  const accepted: [string, string, (info: Parsed) => unknown, unknown][] = [
    ['without References (harmonia)', dropLine('References'), (i) => i.references, []],
    [
      'without FileHash and FileSize (niks3)',
      dropLine('FileHash').replace(/^FileSize.*\n/m, ''),
      (i) => [i.fileHash, i.fileSize],
      [undefined, undefined],
    ],
    [
      'references split on runs of spaces',
      edit(`References: ${REFS}`, `References:  ${REFS.replace(' ', '   ')} `),
      (i) => i.references,
      REFS.split(' '),
    ],
    [
      'an empty References line, then one with references',
      edit('References: ', 'References: \nReferences: '),
      (i) => i.references.length,
      2,
    ],
    ['no Compression line: bzip2', dropLine('Compression'), (i) => i.compression, 'bzip2'],
    ['an empty Compression: bzip2', edit('Compression: zstd', 'Compression: '), (i) => i.compression, 'bzip2'],
    ['Compression br, which Nix knows', edit('Compression: zstd', 'Compression: br'), (i) => i.compression, 'br'],
    ['an empty CA: none', `${NIX}CA: \n`, (i) => i.ca, undefined],
    ['an empty CA, then one', `${NIX}CA: \nCA: ${CA}\n`, (i) => i.ca, CA],
    ['CA text:sha256', `${NIX}CA: text:sha256:${CA.slice(-52)}\n`, (i) => i.ca, `text:sha256:${CA.slice(-52)}`],
    ['CA flat, in hex', `${NIX}CA: fixed:sha1:${'a'.repeat(40)}\n`, (i) => i.ca, `fixed:sha1:${'a'.repeat(40)}`],
    ['Deriver unknown-deriver: none', edit(/^Deriver: .*$/m, 'Deriver: unknown-deriver'), (i) => i.deriver, undefined],
    [
      'a NarHash in SRI sha512',
      edit(/^NarHash: .*$/m, `NarHash: sha512-${createHash('sha512').digest('base64')}`),
      (i) => i.narHash.algorithm,
      'sha512',
    ],
    [
      'a FileHash in upper-case hex',
      edit(/^FileHash: .*$/m, `FileHash: sha256:${'AB'.repeat(32)}`),
      (i) => i.fileHash?.digest.toString('hex'),
      'ab'.repeat(32),
    ],
    [
      'a StorePath Nix normalises',
      edit('StorePath: /nix/store/', 'StorePath: /nix//store/./'),
      (i) => i.storePath,
      '/nix/store/yrz6dw5nnz86xas3wq4dl2xz14dwrfbc-fixture-app',
    ],
    ['a field Nix does not know', `${NIX}Provenance: {}\nX-Unknown: 1\n`, (i) => i.narSize, 1704],
    ['the same Sig twice', `${NIX}Sig: ${SIG}\n`, (i) => i.sigs, [SIG]],
    // Nix >= 2.34 decodes each Sig and encodes it again (padded), and keeps them by key name, then bytes.
    ['a Sig without its padding', edit(`Sig: ${SIG}`, `Sig: ${SIG.replace(/=+$/, '')}`), (i) => i.sigs, [SIG]],
    ['the same Sig spelled twice', `${NIX}Sig: ${SIG.replace(/=+$/, '')}\n`, (i) => i.sigs, [SIG]],
    ['a Sig of another length, which only fails to verify', `${NIX}Sig: b:AAAA\n`, (i) => i.sigs, ['b:AAAA', SIG]],
    [
      'Sigs by key name ("a" before "a-b", though "a-b:" sorts first as text), then by bytes ("/" is 63)',
      edit(`Sig: ${SIG}\n`, 'Sig: a-b:AAAA\nSig: a:/wAA\nSig: a:AAAA\n'),
      (i) => i.sigs,
      ['a:AAAA', 'a:/wAA', 'a-b:AAAA'],
    ],
  ];
  for (const [name, text, look, expected] of accepted) {
    it(`accepts ${name}`, () => {
      assert.deepEqual(look(parseNarInfo(text, 'case.narinfo')), expected);
    });
  }
  const rejected: [string, string, RegExp][] = [
    ['an unknown Compression', edit('Compression: zstd', 'Compression: zip'), /Compression "zip"/],
    ['a second References line', edit('References: ', `References: ${REFS}\nReferences: `), /second References/],
    ['a second CA line', `${NIX}CA: ${CA}\nCA: ${CA}\n`, /second CA/],
    ['a CA that does not parse', `${NIX}CA: fixed:r:sha256:xyz\n`, /CA "fixed:r:sha256:xyz"/],
    ['a CA of an unknown method', `${NIX}CA: git:sha1:${'a'.repeat(40)}\n`, /does not parse/],
    ['a text CA that is not sha256', `${NIX}CA: text:sha1:${'a'.repeat(40)}\n`, /does not parse/],
    ['a Sig without a key name', edit(`Sig: ${SIG}`, `Sig: ${SIG.slice(SIG.indexOf(':'))}`), /Sig/],
    ['a Sig with no colon', edit(`Sig: ${SIG}`, 'Sig: example-cache-1'), /Sig/],
    ['a Sig that is not base64', edit(`Sig: ${SIG}`, `Sig: ${SIG.replace('+', '_')}`), /Sig/],
    ['a Sig of no bytes', edit(`Sig: ${SIG}`, 'Sig: example-cache-1:=='), /Sig/],
    ['a Deriver that is not a store path', edit(/^Deriver: .*$/m, 'Deriver: ../etc.drv'), /Deriver/],
    ['a reference that is not a store path', edit('References: ms9g', 'References: .-'), /reference/],
    ['a NarHash Nix cannot read', edit(/^NarHash: sha256:/m, 'NarHash: sha256:='), /NarHash/],
    ['a FileHash of an unknown algorithm', edit(/^FileHash: sha256:/m, 'FileHash: sha3:'), /FileHash/],
    ['a negative NarSize', edit('NarSize: 1704', 'NarSize: -1'), /NarSize/],
    ['no StorePath', dropLine('StorePath'), /no StorePath/],
    ['a StorePath outside the store', edit('StorePath: /nix/store/', 'StorePath: /nix/store/../etc/'), /StorePath/],
    ['no URL', dropLine('URL'), /no URL/],
    ['an empty URL', edit(/^URL: .*$/m, 'URL: '), /no URL/],
    ['no final newline', NIX.trimEnd(), /newline/],
    ['a line without a colon at the end', `${NIX}trailing\n`, /expecting ':'/],
  ];
  for (const [name, text, pattern] of rejected) {
    it(`rejects ${name}`, () => {
      assert.throws(
        () => parseNarInfo(text, 'case.narinfo'),
        (err: unknown) => err instanceof CachectlError && err.code === 'NARINFO_INVALID' && pattern.test(err.message),
      );
    });
  }
  it('the GC keeps a narinfo Nix would reject, with what it seems to refer to, and reports it', () => {
    const hashPart = 'yrz6dw5nnz86xas3wq4dl2xz14dwrfbc';
    for (const [, text] of rejected) {
      const meta = narInfoMeta(text, `${hashPart}.narinfo`, hashPart);
      assert.ok(meta.problem !== undefined, text);
    }
    const meta = narInfoMeta(edit('Compression: zstd', 'Compression: zip'), `${hashPart}.narinfo`, hashPart);
    assert.deepEqual(meta.references, ['ms9gx7bx74vq2c5fhvc948q04shp5g11']);
  });
});

describe("build logs (Nix's drvs/XX/REST.bz2 under compress-build-log)", () => {
  const dir = mkdtempSync(join(tmpdir(), 'cachectl-logs-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const logOf = (name: string, bytes: Buffer) => {
    const file = join(dir, name);
    writeFileSync(file, bytes);
    return { drvPath: `/nix/store/${HASH}-${name}.drv`, file, compressed: true, fileBytes: bytes.length };
  };
  const text = async (log: ReturnType<typeof logOf>) => {
    const chunks: Buffer[] = [];
    for await (const chunk of readBuildLog(log)) chunks.push(chunk);
    return Buffer.concat(chunks).toString();
  };
  it('reads an empty log, as bzip2 writes it at any block size, as nothing', async () => {
    for (const level of ['1', '9'])
      assert.equal(await text(logOf(`empty-${level}`, execFileSync('bzip2', [`-${level}`, '-c'], { input: '' }))), '');
  });
  it('reads a log with text', async () => {
    assert.equal(await text(logOf('hello', execFileSync('bzip2', ['-c'], { input: 'hello\n' }))), 'hello\n');
  });
  it('refuses a 14-byte log that is not an empty stream, naming it', async () => {
    const corrupt = Buffer.from('BZh9' + '177245385090'.replace(/../g, 'x') + '\0\0\0\0', 'latin1');
    await assert.rejects(text(logOf('corrupt', corrupt)), (err: CachectlError) => {
      assert.equal(err.code, 'BUILD_LOG_UNREADABLE');
      assert.match(err.message, /corrupt/);
      return true;
    });
  });
});
