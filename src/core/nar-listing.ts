/**
 * The NAR listing (`<hash>.ls`) byte for byte as Nix writes it with `write-nar-listing=true`: Nix 2.8's
 * `listNar` through its own JSON writer, not a JSON library. So the keys come in the writer's order (`type`,
 * `size`, `executable`, `narOffset`), entries in the NAR's byte order, and strings are escaped the way
 * `nix::toJSON` does: `"` and `\`, `\n` `\r` `\t`, other bytes below 0x20 as `\u00XX`, everything else (bytes of
 * any encoding included) as it is. JSON.stringify would differ in all three.
 *
 * Built while the NAR streams: the dump calls these methods in NAR order, and `narOffset` is where a file's
 * contents start in the NAR.
 */
export class NarListing {
  /** the listing so far, one character per byte (latin1), so names of any encoding pass through unchanged */
  private readonly parts: string[] = ['{"version":1,"root":'];
  /** per open directory: whether an entry was written yet (for the commas) */
  private readonly openDirectories: boolean[] = [];

  regular(size: number, executable: boolean, narOffset: number): void {
    const mode = executable ? ',"executable":true' : '';
    this.parts.push(`{"type":"regular","size":${size}${mode},"narOffset":${narOffset}}`);
  }

  symlink(target: Buffer): void {
    this.parts.push(`{"type":"symlink","target":${jsonString(target)}}`);
  }

  openDirectory(): void {
    this.parts.push('{"type":"directory","entries":{');
    this.openDirectories.push(false);
  }

  /** Starts the entry `name` of the directory opened last; its node follows. */
  entry(name: Buffer): void {
    const last = this.openDirectories.length - 1;
    if (this.openDirectories[last] === true) this.parts.push(',');
    this.openDirectories[last] = true;
    this.parts.push(`${jsonString(name)}:`);
  }

  closeDirectory(): void {
    this.openDirectories.pop();
    this.parts.push('}}');
  }

  /** The whole listing, once the NAR is done. */
  bytes(): Buffer {
    return Buffer.from(`${this.parts.join('')}}`, 'latin1');
  }
}

const ESCAPES: Readonly<Record<string, string>> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

// eslint-disable-next-line no-control-regex -- control characters are what it escapes
const ESCAPED = /["\\\x00-\x1f]/g;

/** A JSON string of `bytes` as nix::toJSON writes it, one character per byte (latin1). */
export function jsonString(bytes: Buffer): string {
  const text = bytes.toString('latin1');
  const escaped = text.replace(
    ESCAPED,
    (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `"${escaped}"`;
}
