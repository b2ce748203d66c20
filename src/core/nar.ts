/**
 * NAR framing (Nix's archive format): every token is a little-endian u64 length, the bytes, and zero
 * padding to a multiple of 8. A node is `( type regular [executable ""] contents <data> )`,
 * `( type symlink target <t> )` or `( type directory entry ( name <n> node <node> )… )`, entries sorted
 * bytewise by name. Pure: the walker that reads files lives in src/nix/nar-dump.ts.
 */
const ZEROS = Buffer.alloc(8);

export function narPadding(length: number): Buffer {
  return ZEROS.subarray(0, (8 - (length % 8)) % 8);
}

function u64(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

export function narString(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([u64(bytes.length), bytes, narPadding(bytes.length)]);
}

function tokens(...values: string[]): Buffer {
  return Buffer.concat(values.map((v) => narString(v)));
}

export const NAR_MAGIC = tokens('nix-archive-1');
export const NAR_OPEN = tokens('(');
export const NAR_CLOSE = tokens(')');

/** Everything of a regular file node before its bytes, ending in the u64 content length. */
export function narRegularHeader(executable: boolean, size: number): Buffer {
  const head = executable
    ? tokens('(', 'type', 'regular', 'executable', '', 'contents')
    : tokens('(', 'type', 'regular', 'contents');
  return Buffer.concat([head, u64(size)]);
}

/** The bytes after a regular file's contents: padding and the node's `)`. */
export function narRegularTrailer(size: number): Buffer {
  return Buffer.concat([narPadding(size), NAR_CLOSE]);
}

export function narSymlink(target: Buffer): Buffer {
  return Buffer.concat([tokens('(', 'type', 'symlink', 'target'), narString(target), NAR_CLOSE]);
}

export const NAR_DIRECTORY_OPEN = tokens('(', 'type', 'directory');

export function narEntryOpen(name: Buffer): Buffer {
  return Buffer.concat([tokens('entry', '(', 'name'), narString(name), tokens('node')]);
}

/** Closes an entry: `)` of the entry. */
export const NAR_ENTRY_CLOSE = NAR_CLOSE;
