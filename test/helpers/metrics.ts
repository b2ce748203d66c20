import assert from 'node:assert/strict';

/** What a /metrics page exports: each sample by `name{labels}` as written, and each family's type. */
export interface Exposition {
  samples: Map<string, number>;
  families: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/;

/**
 * The Prometheus text format (0.0.4), checked as Prometheus reads it: every sample after its family's HELP and
 * TYPE, histogram and summary samples under their `_bucket`, `_sum` and `_count` names, values numbers.
 */
export function parseExposition(text: string): Exposition {
  const samples = new Map<string, number>();
  const families = new Map<string, string>();
  assert.ok(text.endsWith('\n'), 'the page ends with a newline');
  for (const line of text.trimEnd().split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3] as string, /^(gauge|counter|histogram|summary)$/, line);
        families.set(meta[2] as string, meta[3] as string);
      }
      continue;
    }
    const sample = SAMPLE.exec(line);
    assert.ok(sample !== null, `not a Prometheus sample: ${line}`);
    const [, name = '', labels = '', value = ''] = sample;
    assert.ok(familyOf(name, families) !== undefined, `${line}: no TYPE line before it`);
    assert.ok(/^[-+]?(\d+(\.\d+)?(e[-+]?\d+)?|Inf|NaN)$/i.test(value), `${line}: not a number`);
    samples.set(`${name}${labels}`, Number(value.replace(/inf/i, 'Infinity')));
  }
  return { samples, families };
}

/** The family a sample name belongs to: itself, or a histogram's or summary's whose suffix it has. */
export function familyOf(name: string, families: ReadonlyMap<string, string>): string | undefined {
  if (families.has(name)) return name;
  const match = /^(.+)_(bucket|sum|count)$/.exec(name);
  const base = match?.[1];
  if (base === undefined) return undefined;
  const type = families.get(base);
  return type === 'histogram' || (type === 'summary' && match?.[2] !== 'bucket') ? base : undefined;
}
