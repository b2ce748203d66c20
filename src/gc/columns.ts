/**
 * Compact storage for the GC's million-object inventories: numbers in typed arrays and strings packed into one
 * buffer, outside the JS heap. As JS arrays, maps and strings the same data took five times the memory, and
 * the garbage collector's slack on top.
 */

/** A growable array of numbers of one typed-array kind. */
export class Column<T extends Float64Array | Int32Array> {
  private data: T;
  length = 0;

  constructor(private readonly make: (size: number) => T) {
    this.data = make(1024);
  }

  push(value: number): number {
    if (this.length === this.data.length) {
      const grown = this.make(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.length] = value;
    return (this.length += 1) - 1;
  }

  at(index: number): number {
    return this.data[index] as number;
  }
}

const EMPTY = 0;

/**
 * Strings packed one after another in one buffer, each by its index. Only characters up to U+00FF are stored
 * faithfully (one byte each): the layout's keys are ASCII, and an ETag that is not only compares unequal, so its
 * narinfo is read again. With `indexed`, `indexOf` finds a string in constant time (open addressing).
 */
export class PackedStrings {
  private bytes = Buffer.alloc(64 * 1024);
  private used = 0;
  private readonly ends = new Column((size) => new Int32Array(size));
  /** index + 1 of the string in each slot, EMPTY for none; a power of two, at most half full */
  private slots: Int32Array;

  constructor(private readonly indexed = false) {
    this.slots = new Int32Array(indexed ? 1024 : 0);
  }

  get length(): number {
    return this.ends.length;
  }

  /** Appends `text` (duplicates included), and returns its index. */
  add(text: string): number {
    if (this.used + text.length > this.bytes.length) {
      const grown = Buffer.alloc(Math.max(this.bytes.length * 2, this.used + text.length));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    this.used += this.bytes.write(text, this.used, 'latin1');
    const index = this.ends.push(this.used);
    if (this.indexed) {
      if ((this.length + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
      else this.place(index, hashOf(text));
    }
    return index;
  }

  at(index: number): string {
    return this.bytes.toString('latin1', this.start(index), this.ends.at(index));
  }

  /** The index of `text`, or -1 (only for an indexed table). */
  indexOf(text: string): number {
    const mask = this.slots.length - 1;
    for (let slot = hashOf(text) & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot] as number;
      if (held === EMPTY) return -1;
      if (this.equals(held - 1, text)) return held - 1;
    }
  }

  private start(index: number): number {
    return index === 0 ? 0 : this.ends.at(index - 1);
  }

  private equals(index: number, text: string): boolean {
    const start = this.start(index);
    if (this.ends.at(index) - start !== text.length) return false;
    for (let i = 0; i < text.length; i += 1) if (this.bytes[start + i] !== (text.charCodeAt(i) & 0xff)) return false;
    return true;
  }

  private place(index: number, hash: number): void {
    const mask = this.slots.length - 1;
    let slot = hash & mask;
    while (this.slots[slot] !== EMPTY) slot = (slot + 1) & mask;
    this.slots[slot] = index + 1;
  }

  private rehash(size: number): void {
    this.slots = new Int32Array(size);
    for (let index = 0; index < this.length; index += 1) {
      let hash = FNV_OFFSET;
      for (let i = this.start(index); i < this.ends.at(index); i += 1)
        hash = Math.imul(hash ^ (this.bytes[i] as number), FNV_PRIME);
      this.place(index, hash >>> 0);
    }
  }
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over the low bytes of the characters, as stored. */
function hashOf(text: string): number {
  let hash = FNV_OFFSET;
  for (let i = 0; i < text.length; i += 1) hash = Math.imul(hash ^ (text.charCodeAt(i) & 0xff), FNV_PRIME);
  return hash >>> 0;
}
