import { describe, expect, it } from 'vitest';
import { WorkflowCache } from '../../src/worker/workflow-cache.js';

class Entry {
  disposed = false;
  dispose(): void {
    this.disposed = true;
  }
}

describe('workflow cache', () => {
  it('evicts the least recently used entry beyond its count bound, disposing it', () => {
    const cache = new WorkflowCache<Entry>(2, 1, () => 0);
    const a = new Entry();
    const b = new Entry();
    const c = new Entry();
    cache.put('a', a);
    cache.put('b', b);
    cache.put('a', cache.take('a')!); // a is now most recent
    cache.put('c', c);
    expect(cache.size).toBe(2);
    expect(b.disposed).toBe(true);
    expect(a.disposed).toBe(false);
    expect(cache.take('b')).toBeUndefined();
  });

  it('evicts a quarter of the entries while the heap is above the watermark', () => {
    let heap = 0;
    const cache = new WorkflowCache<Entry>(100, 0.5, () => heap);
    const entries = Array.from({ length: 8 }, () => new Entry());
    heap = 0;
    for (const [i, e] of entries.entries()) cache.put(String(i), e);
    expect(cache.size).toBe(8);
    heap = Number.MAX_SAFE_INTEGER;
    // The heap is read every 32 puts: re-putting an existing entry counts as a put.
    for (let i = 0; i < 32; i++) cache.put('7', cache.take('7')!);
    expect(cache.size).toBe(6);
    expect(entries.slice(0, 2).every((e) => e.disposed)).toBe(true);
    expect(entries[2]!.disposed).toBe(false);
  });

  it('with a bound of 0 keeps nothing', () => {
    const cache = new WorkflowCache<Entry>(0, 1, () => 0);
    const e = new Entry();
    cache.put('x', e);
    expect(cache.size).toBe(0);
    expect(e.disposed).toBe(true);
  });
});
