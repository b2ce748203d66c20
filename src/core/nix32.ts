/**
 * Nix's base-32: the alphabet omits e, o, t, u; the bytes are read as one little-endian number and the
 * most significant 5-bit group is written first (52 characters for SHA-256, 32 for a store-path digest).
 */
export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const DIGIT_OF = new Map<string, number>(Array.from(NIX32_ALPHABET, (c, i) => [c, i]));

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
    const digit = DIGIT_OF.get(text[text.length - n - 1] as string);
    if (digit === undefined) return undefined;
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
  for (const c of text) if (!DIGIT_OF.has(c)) return false;
  return true;
}
