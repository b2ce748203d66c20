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
  private readonly parts: Buffer[] = [Buffer.from('{"version":1,"root":')];
  /** per open directory: whether an entry was written yet (for the commas) */
  private readonly openDirectories: boolean[] = [];

  regular(size: number, executable: boolean, narOffset: number): void {
    const mode = executable ? ',"executable":true' : '';
    this.parts.push(Buffer.from(`{"type":"regular","size":${size}${mode},"narOffset":${narOffset}}`));
  }

  symlink(target: Buffer): void {
    this.parts.push(Buffer.from('{"type":"symlink","target":'), jsonString(target), Buffer.from('}'));
  }

  openDirectory(): void {
    this.parts.push(Buffer.from('{"type":"directory","entries":{'));
    this.openDirectories.push(false);
  }

  /** Starts the entry `name` of the directory opened last; its node follows. */
  entry(name: Buffer): void {
    const last = this.openDirectories.length - 1;
    if (this.openDirectories[last] === true) this.parts.push(Buffer.from(','));
    this.openDirectories[last] = true;
    this.parts.push(jsonString(name), Buffer.from(':'));
  }

  closeDirectory(): void {
    this.openDirectories.pop();
    this.parts.push(Buffer.from('}}'));
  }

  /** The whole listing, once the NAR is done. */
  bytes(): Buffer {
    return Buffer.concat([...this.parts, Buffer.from('}')]);
  }
}

const QUOTE = Buffer.from('"');
const HEX = '0123456789abcdef';
const SHORT_ESCAPES: Readonly<Record<number, string>> = { 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t' };

/** A JSON string of `bytes` as nix::toJSON writes it. */
export function jsonString(bytes: Buffer): Buffer {
  if (!bytes.some((byte) => byte < 0x20 || byte === 0x22 || byte === 0x5c)) {
    return Buffer.concat([QUOTE, bytes, QUOTE]);
  }
  const out: number[] = [0x22];
  for (const byte of bytes) {
    const short = SHORT_ESCAPES[byte];
    if (byte === 0x22 || byte === 0x5c) out.push(0x5c, byte);
    else if (short !== undefined) for (const char of short) out.push(char.charCodeAt(0));
    else if (byte < 0x20) for (const char of `\\u00${HEX[byte >> 4]}${HEX[byte & 15]}`) out.push(char.charCodeAt(0));
    else out.push(byte);
  }
  out.push(0x22);
  return Buffer.from(out);
}
