/** One pattern from parts written on lines of their own (each part a whole pattern; flags from the last). */
export function regex(...parts: RegExp[]): RegExp {
  return new RegExp(parts.map((part) => part.source).join(''), parts.at(-1)?.flags ?? '');
}
