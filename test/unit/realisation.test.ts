import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import { CachectlError } from '../../src/core/errors.js';
import { parseRealisation, realisationFingerprint, renderRealisation } from '../../src/core/realisation.js';
import { formatPublicKey, generateSecretKey, parsePublicKey, verifySignature } from '../../src/core/signing.js';
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
