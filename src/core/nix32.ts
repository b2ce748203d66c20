/**
 * Nix's base-32: the alphabet omits e, o, t, u; the bytes are read as one little-endian number and the
 * most significant 5-bit group is written first (52 characters for SHA-256, 32 for a store-path digest).
 */
export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

/** The digit of each character code below 128, -1 for characters outside the alphabet (a table: hot in the GC). */
const DIGIT_OF = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT_OF[NIX32_ALPHABET.charCodeAt(i)] = i;

function digitOf(code: number): number {
  return code < 128 ? (DIGIT_OF[code] as number) : -1;
}

export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function nix32Encode(bytes: Uint8Array): string {
  const length = nix32Length(bytes.length);
  let out = '';
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    const low = (bytes[i] ?? 0) >> j;
    const high = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0;
    out += NIX32_ALPHABET.charAt((low | high) & 0x1f);
  }
  return out;
}

/** Decodes nix32 text; returns undefined when it is not valid nix32 of a whole number of bytes. */
export function nix32Decode(text: string): Buffer | undefined {
  const size = Math.floor((text.length * 5) / 8);
  if (nix32Length(size) !== text.length) return undefined;
  const bytes = Buffer.alloc(size);
  for (let n = 0; n < text.length; n++) {
    const digit = digitOf(text.charCodeAt(text.length - n - 1));
    if (digit < 0) return undefined;
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    bytes[i] = (bytes[i] as number) | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < size) bytes[i + 1] = (bytes[i + 1] as number) | carry;
    else if (carry !== 0) return undefined;
  }
  return bytes;
}

export function isNix32(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (digitOf(text.charCodeAt(i)) < 0) return false;
  return true;
}
