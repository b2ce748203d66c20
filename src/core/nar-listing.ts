import { isUtf8 } from 'node:buffer';

/**
 * The NAR listing (`<hash>.ls`) byte for byte as Nix ≥ 2.34 writes it with `write-nar-listing=true`: nlohmann's
 * `dump()` of the listing, so every object's keys in byte order (`{"root":…,"version":1}`; a file's
 * `executable` (only when true), `narOffset`, `size`, `type`), entries in the NAR's (byte) order, strings as
 * nlohmann escapes them: `"` and `\`, `\b` `\f` `\n` `\r` `\t`, other bytes below 0x20 as `\u00xx`, the rest as
 * it is. A name or link target that is not UTF-8 makes nlohmann throw, and `nix copy` fails the path: here that
 * path gets no listing (`bytes()` is undefined) and goes up without one. No Nix reads a cache's listing; other
 * tools (nix-index) do, with strict JSON parsers. Nix 2.8 wrote the same structure in another key order.
 *
 * Built while the NAR streams: the dump calls these methods in NAR order, and `narOffset` is where a file's
 * contents start in the NAR.
 */
export class NarListing {
  private readonly parts: string[] = ['{"root":'];
  /** per open directory: whether an entry was written yet (for the commas) */
  private readonly openDirectories: boolean[] = [];
  /** a name or link target that is not UTF-8, which JSON cannot hold */
  private notUtf8 = false;

  regular(size: number, executable: boolean, narOffset: number): void {
    const mode = executable ? '"executable":true,' : '';
    this.parts.push(`{${mode}"narOffset":${narOffset},"size":${size},"type":"regular"}`);
  }

  symlink(target: Buffer): void {
    this.parts.push(`{"target":${this.string(target)},"type":"symlink"}`);
  }

  openDirectory(): void {
    this.parts.push('{"entries":{');
    this.openDirectories.push(false);
  }

  /** Starts the entry `name` of the directory opened last; its node follows. */
  entry(name: Buffer): void {
    const last = this.openDirectories.length - 1;
    if (this.openDirectories[last] === true) this.parts.push(',');
    this.openDirectories[last] = true;
    this.parts.push(`${this.string(name)}:`);
  }

  closeDirectory(): void {
    this.openDirectories.pop();
    this.parts.push('},"type":"directory"}');
  }

  /** The whole listing, once the NAR is done; undefined when a name is not UTF-8 (see above). */
  bytes(): Buffer | undefined {
    return this.notUtf8 ? undefined : Buffer.from(`${this.parts.join('')},"version":1}`);
  }

  private string(bytes: Buffer): string {
    if (!isUtf8(bytes)) this.notUtf8 = true;
    return jsonString(bytes.toString('utf8'));
  }
}

const ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

// eslint-disable-next-line no-control-regex -- control characters are what it escapes
const ESCAPED = /["\\\x00-\x1f]/g;

/** A JSON string as nlohmann's dump writes it (ensure_ascii off): see NarListing. */
export function jsonString(text: string): string {
  const escaped = text.replace(
    ESCAPED,
    (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `"${escaped}"`;
}
