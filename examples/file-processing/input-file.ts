import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

/** What a correct pass over the file must find. */
export interface InputFileFacts {
  readonly lines: number;
  readonly sum: number;
  readonly bytes: number;
}

/** The amount on line `i` (0-based): deterministic, so a test can recompute any prefix. */
export function amountOf(i: number): number {
  return (i * 7919) % 10_000;
}

/** The text of line `i`, without its newline: `<id>,<amount>`. */
export function lineOf(i: number): string {
  return `${i + 1},${amountOf(i)}`;
}

/** Writes `lines` lines of `<id>,<amount>` and returns the line count, the sum of amounts and the size. */
export async function generateInputFile(path: string, lines: number): Promise<InputFileFacts> {
  const out = createWriteStream(path);
  let sum = 0;
  let bytes = 0;
  let chunk = '';
  for (let i = 0; i < lines; i++) {
    const line = `${lineOf(i)}\n`;
    chunk += line;
    bytes += line.length;
    sum += amountOf(i);
    if (chunk.length >= 64 * 1024) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
  return { lines, sum, bytes };
}
