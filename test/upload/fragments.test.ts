/**
 * How a buffered FRAGMENT is handed to the transport (bufferBody): views of one
 * buffer, in order, whose size follows the link — doubling while the socket
 * takes each within 20 ms, back to 1 MiB when one takes longer, so a slow link
 * still reports progress every MiB.
 */
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { bufferBody } from '../../src/client/upload/fragments.js';

const MiB = 1024 * 1024;

async function slices(buf: Buffer, msPerSlice: (i: number) => number): Promise<{ sizes: number[]; counted: number; out: Buffer }> {
  let clock = 0;
  const sizes: number[] = [];
  const parts: Buffer[] = [];
  let counted = 0;
  let i = 0;
  for await (const part of bufferBody(buf, (n) => (counted += n), () => clock)) {
    expect(part.buffer).toBe(buf.buffer); // a view, never a copy
    sizes.push(part.length);
    parts.push(Buffer.from(part));
    clock += msPerSlice(i++);
  }
  return { sizes, counted, out: Buffer.concat(parts) };
}

it('grows the slices on a fast link and keeps them at 1 MiB on a slow one; every byte once, in order', async () => {
  const buf = randomBytes(8 * MiB + 5);
  const fast = await slices(buf, () => 1);
  expect(fast.sizes).toEqual([1 * MiB, 2 * MiB, 4 * MiB, 1 * MiB + 5]);
  expect(fast.out.equals(buf)).toBe(true);
  expect(fast.counted).toBe(buf.length);

  const slow = await slices(buf, () => 500);
  expect(slow.sizes).toEqual([...Array(8).fill(MiB), 5]);
  expect(slow.out.equals(buf)).toBe(true);

  // A link that slows down mid-fragment goes back to 1 MiB slices at once.
  const mixed = await slices(buf, (i) => (i < 2 ? 1 : 500));
  expect(mixed.sizes.slice(0, 4)).toEqual([1 * MiB, 2 * MiB, 4 * MiB, 1 * MiB]);
  expect(mixed.out.equals(buf)).toBe(true);
});
