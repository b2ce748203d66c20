import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import { CachectlError } from '../../src/core/errors.js';
import {
  buildTraceFingerprint,
  parseBuildTrace,
  parseRealisation,
  realisationFingerprint,
  renderBuildTrace,
  renderRealisation,
} from '../../src/core/realisation.js';
import {
  formatPublicKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  verifySignature,
} from '../../src/core/signing.js';
import { buildTraceKey, buildTraceOf } from '../../src/cache/layout.js';
import { parseDerivation, realisationIds, unparseDerivation } from '../../src/nix/derivation.js';
import { makeSigner } from '../../src/upload/signer.js';

// Derivations Nix 2.8 wrote (test/fixtures/derivations), with the ids `nix realisation info` gave for them.
const DERIVATIONS = new URL('../../../test/fixtures/derivations/', import.meta.url).pathname;
const NIX_IDS: Record<string, string> = {
  'aas2snmj20k0zysrd1rp2yb10wfxr84z-cadep1796140595002882465.drv':
    'sha256:93cff5fe39fc331ce70bc60bcbc0ff182e553f6a5b475df85b9b1cc3229e6b8a!out',
  '3hnk2qp9vwza7xfr7whn973prff8pza5-catop1796140595002882465.drv':
    'sha256:7c4818e6f16b4ab93457a2ccbfe0d8a439c617bae4a74b8d719f0ee258772dea!out',
  'w4lcgnzcq1hpawgy9mwl1r2y6i808g6s-cachectl-ca-fixed.drv':
    'sha256:2a6fd2f0263ac587548921391e53ca95a66998b35eda4243022cb273f8c2dbc6!out',
  '6qsmy3vk59fsma24sbwljha0wph7zsjm-cachectl-ca-dep-t1796141595.drv':
    'sha256:3caf415ac182863f31226ba1228188c75cb4c14dd2b2c3dec867cc17e71ba095!out',
  'in136m1nghvyk2f0rbwgcf251l7iw7gg-cachectl-ca-build-only-t1796141595.drv':
    'sha256:91f37df806f6d3cc2e69e06c9e80b79d1efab58a0a61e0f1b18b209dc189095c!out',
  'sazrlalyip51y9nfvass8kjzahbmip0w-cachectl-ca-top-t1796141595.drv':
    'sha256:9a7f7334bd213925eb7c9f5ca75f40897e7017135ec372807e92136e49dc679c!out',
};

/** Reads an input derivation from the fixtures instead of the store. */
const readFixture = (drvPath: string) =>
  parseDerivation(readFileSync(join(DERIVATIONS, basename(drvPath)), 'latin1'), drvPath);

// What nix copy of a content-addressed derivation wrote (Nix 2.8), byte for byte.
const NIX_DOI =
  '{"dependentRealisations":{"sha256:3caf415ac182863f31226ba1228188c75cb4c14dd2b2c3dec867cc17e71ba095!out":' +
  '"c9pl1xbln9nx67555zjxylfzay6d3s3p-cachectl-ca-dep-t1796141595"},' +
  '"id":"sha256:9a7f7334bd213925eb7c9f5ca75f40897e7017135ec372807e92136e49dc679c!out",' +
  '"outPath":"jiwwc86c19ii9c4wd0cmq0fb72v1z8mf-cachectl-ca-top-t1796141595","signatures":[]}';

describe('derivations', () => {
  it('reads and writes back every derivation byte for byte', () => {
    for (const name of readdirSync(DERIVATIONS)) {
      const text = readFileSync(join(DERIVATIONS, name), 'latin1');
      assert.equal(unparseDerivation(parseDerivation(text, name)), text, name);
    }
  });

  it("computes each output's realisation id as Nix does: floating, fixed-output and resolved inputs", () => {
    assert.deepEqual(readdirSync(DERIVATIONS).sort(), Object.keys(NIX_IDS).sort());
    for (const [name, id] of Object.entries(NIX_IDS)) {
      assert.deepEqual([...realisationIds(`/nix/store/${name}`, readFixture)], [['out', id]], name);
    }
  });

  it('escapes as Nix does, and refuses what Nix did not write', () => {
    const text =
      'Derive([("out","/nix/store/00000000000000000000000000000000-x","","")],[],[],"x86_64-linux","/bin/sh",' +
      '["-c","printf \\"a\\\\tb\\\\n\\"\\n\\t\\r"],[("out","/nix/store/00000000000000000000000000000000-x")])';
    const drv = parseDerivation(text, 'x.drv');
    assert.equal(drv.args[1], 'printf "a\\tb\\n"\n\t\r');
    assert.equal(unparseDerivation(drv), text);
    // masked: the output's path and its environment variable are empty
    assert.match(unparseDerivation(drv, { maskOutputs: true }), /^Derive\(\[\("out","","",""\)\].*\[\("out",""\)\]\)$/);
    for (const bad of [text.slice(0, -1), `${text} `, text.replace('Derive(', 'Derive ('), '']) {
      assert.throws(
        () => parseDerivation(bad, 'bad.drv'),
        (err: unknown) => err instanceof CachectlError && err.code === 'NIX_STORE_UNREADABLE',
      );
    }
  });
});

describe('realisations', () => {
  it('renders byte for byte what Nix writes, and parses it back', () => {
    const parsed = parseRealisation(NIX_DOI, 'top.doi');
    assert.equal(parsed.outPath, 'jiwwc86c19ii9c4wd0cmq0fb72v1z8mf-cachectl-ca-top-t1796141595');
    assert.equal(renderRealisation(parsed), NIX_DOI);
    // the fingerprint is that JSON without its signatures (Realisation::fingerprint)
    assert.equal(realisationFingerprint(parsed), NIX_DOI.replace(',"signatures":[]', ''));
  });

  it("signs with each key over Nix's fingerprint; signatures come out sorted, once each", async () => {
    const keys = [generateSecretKey('b-1'), generateSecretKey('a-1')];
    // as the push signs one: its signer over the fingerprint
    const parsed = parseRealisation(NIX_DOI, 'top.doi');
    const signed = { ...parsed, signatures: await makeSigner(keys).sign(realisationFingerprint(parsed)) };
    const rendered = parseRealisation(
      renderRealisation({ ...signed, signatures: [...signed.signatures, ...signed.signatures] }),
      'x',
    );
    assert.deepEqual(
      rendered.signatures.map((sig) => sig.split(':')[0]),
      ['a-1', 'b-1'],
    );
    const fingerprint = NIX_DOI.replace(',"signatures":[]', '');
    for (const [i, key] of keys.entries()) {
      const publicKey = parsePublicKey(formatPublicKey(key));
      assert.equal(verifySignature([publicKey], fingerprint, signed.signatures[i] ?? ''), true);
    }
  });

  it('refuses a realisation Nix would not read', () => {
    const cases = [
      'not json',
      '[]',
      '{"outPath":"jiwwc86c19ii9c4wd0cmq0fb72v1z8mf-top"}',
      NIX_DOI.replace('"id":"sha256:9a7f', '"id":"md5:9a7f'),
      NIX_DOI.replace('!out"', '"'),
      NIX_DOI.replace('"outPath":"jiwwc86c', '"outPath":"/nix/store/jiwwc86c'),
      NIX_DOI.replace('"signatures":[]', '"signatures":"x"'),
      NIX_DOI.replace('"c9pl1xbln9nx67555zjxylfzay6d3s3p-cachectl-ca-dep-t1796141595"', '7'),
    ];
    for (const text of cases) {
      assert.throws(
        () => parseRealisation(text, 'r.doi'),
        (err: unknown) => err instanceof CachectlError && err.code === 'REALISATION_INVALID',
        text,
      );
    }
  });
});

// Nix 2.35's own test data for its build traces (src/libstore-tests/data/realisation/ at 2.35.2, and the key in
// src/libstore-tests/realisation.cc), the oracle while no Nix 2.35 is packaged: simple-fingerprint.txt,
// simple-sig.json, with-signature-fingerprint.txt, with-signature-sig.json, unkeyed-simple.json and
// unkeyed-with-signature.json (pretty-printed there; the cache holds their compact dump, as
// BinaryCacheStore::registerDrvOutput writes it).
const NIX_KEY = 'test-key:tU7tTvLcScf8pmz/eTV0BEtLmRsPpZfKaRcd0nCN+pysBZPHSeg61/u2oc7mIOewfuAY1V1BiX32homTaDJ2Jw==';
const DRV = 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv';
const NIX_TRACES = [
  {
    name: 'simple',
    trace: { drvPath: DRV, outputName: 'foo', outPath: 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo', signatures: [] },
    fingerprint:
      '{"key":{"drvPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv","outputName":"foo"},' +
      '"value":{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo"}}',
    sig: 'WsjxK4/EI74COtzMDI+VCjQU9O4FydK0+YeY1CE5hUevogd+T+CPvNXza7oog3GTMS+ZlBwsC2S3ppwusKnJDg==',
    doi: '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":[]}',
  },
  {
    name: 'with-signature',
    trace: {
      drvPath: DRV,
      outputName: 'foo',
      outPath: 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv',
      signatures: [`asdf:${Buffer.alloc(64).toString('base64')}`],
    },
    fingerprint:
      '{"key":{"drvPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv","outputName":"foo"},' +
      '"value":{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv"}}',
    sig: 'ZE30UrOh26/EYvUaczjJtz6c4WcRYke6IEhDNN5TiFRF6Uu+H8lHofponlhfZxDDrCUlfstS/vtv3Xm2F6M/AA==',
    doi:
      '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv","signatures":[{"keyName":"asdf",' +
      '"sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}]}',
  },
];

describe("build traces (Nix 2.35's realisations)", () => {
  it("keys, fingerprints, signatures and .doi files byte for byte as Nix 2.35's test data has them", async () => {
    const key = parseSecretKey(NIX_KEY, 'the key of realisation.cc');
    for (const { name, trace, fingerprint, sig, doi } of NIX_TRACES) {
      assert.equal(buildTraceKey(`/nix/store/${DRV}`, 'foo'), `build-trace-v2/${DRV}/foo.doi`);
      assert.deepEqual(buildTraceOf(`build-trace-v2/${DRV}/foo.doi`), { drvPath: DRV, outputName: 'foo' });
      assert.equal(buildTraceFingerprint(trace), fingerprint, name);
      // Ed25519 signs deterministically: the same bytes as Nix's, by the push's own signer
      assert.deepEqual(await makeSigner([key]).sign(fingerprint), [`test-key:${sig}`], name);
      assert.equal(renderBuildTrace(trace), doi, name);
      assert.deepEqual(parseBuildTrace(doi, trace, name), trace, name);
    }
  });

  it('reads signatures in the older string form, keeps each once in Nix order, and refuses what Nix refuses', () => {
    const [, { trace, doi }] = NIX_TRACES as [unknown, (typeof NIX_TRACES)[number]];
    const sig = trace.signatures[0] ?? '';
    // with-signature-unstructured.json's value: the string form, read as the structured one
    const unstructured = `{"outPath":"${trace.outPath}","signatures":["${sig}","${sig}"]}`;
    assert.deepEqual(parseBuildTrace(unstructured, trace, 'x'), trace);
    const both = { ...trace, signatures: [`b:${Buffer.alloc(64, 1).toString('base64')}`, sig] };
    assert.deepEqual(
      [...renderBuildTrace(both).matchAll(/"keyName":"(\w+)"/g)].map((match) => match[1]),
      ['asdf', 'b'],
    );
    for (const bad of [
      'not json',
      '[]',
      '{"signatures":[]}',
      doi.replace('"outPath":"g1w7', '"outPath":"/nix/store/g1w7'),
      doi.replace('"signatures":[', '"signatures":{"x":['),
      doi.replace('"keyName":"asdf",', ''),
      doi.replace('"sig":"AAAA', '"sig":"!AAA'),
      `{"outPath":"${trace.outPath}","signatures":["no-colon"]}`,
    ]) {
      assert.throws(
        () => parseBuildTrace(bad, trace, 'x.doi'),
        (err: unknown) => err instanceof CachectlError && err.code === 'REALISATION_INVALID',
        bad,
      );
    }
    assert.equal(buildTraceOf(`build-trace-v2/${DRV}/foo.doi/x`), undefined);
    assert.equal(buildTraceOf(`build-trace-v2/x.drv/foo.doi`), undefined);
  });
});
