/**
 * Maps a request path to a file under the served root, refusing anything that
 * could escape it: `..` segments, encoded slashes (`%2F`, `%5C`), backslashes,
 * NUL, absolute or drive-letter paths, and symlinks that point outside.
 */
import { lstat, realpath } from 'node:fs/promises';
import path from 'node:path';

export class PathRejected extends Error {}

/** Decodes a raw URL path into safe segments, or throws PathRejected. */
export function safeSegments(rawPath: string, platform: NodeJS.Platform = process.platform): string[] {
  if (!rawPath.startsWith('/')) throw new PathRejected('path must start with /');
  const segs: string[] = [];
  for (const raw of rawPath.split('/').slice(1)) {
    if (raw === '') continue;
    if (/%2f|%5c|%00/i.test(raw)) throw new PathRejected('encoded separator in path');
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      throw new PathRejected('bad percent-encoding in path');
    }
    if (seg === '.' || seg === '..') throw new PathRejected('dot segment in path');
    if (/[\\\0]/.test(seg) || /^[a-zA-Z]:/.test(seg)) throw new PathRejected('forbidden character in path');
    // On Windows `name:stream` opens an NTFS alternate data stream, and a
    // trailing dot or space names the same file as without it (so `Secret.`
    // would slip past name checks).
    if (platform === 'win32' && (seg.includes(':') || /[. ]$/.test(seg))) throw new PathRejected('forbidden Windows file name');
    segs.push(seg);
  }
  return segs;
}

/**
 * The absolute file path for a URL path under root. With `mustExist: false` the
 * deepest existing ancestor is checked instead (uploads create new files).
 * Symlinks are resolved and must stay inside root.
 */
export async function resolveUnderRoot(root: string, rawPath: string): Promise<string> {
  const segs = safeSegments(rawPath);
  const realRoot = await realpath(root);
  const target = path.join(realRoot, ...segs);
  // Walk up to the deepest existing ancestor and check where it really is.
  let probe = target;
  for (;;) {
    try {
      const real = await realpath(probe);
      if (real !== realRoot && !real.startsWith(realRoot + path.sep)) throw new PathRejected('path escapes the root');
      break;
    } catch (err) {
      if (err instanceof PathRejected) throw err;
      // A dangling symlink cannot be resolved, but writing through it would
      // create its target wherever it points: only a truly missing entry lets
      // the walk continue upwards.
      if (await existsAsEntry(probe)) {
        // It may just have been created by a concurrent upload: look once more before refusing.
        const again = await realpath(probe).catch(() => undefined);
        if (again === undefined) throw new PathRejected('unresolvable symlink in path');
        if (again !== realRoot && !again.startsWith(realRoot + path.sep)) throw new PathRejected('path escapes the root');
        break;
      }
      const parent = path.dirname(probe);
      if (parent === probe) throw new PathRejected('path escapes the root');
      probe = parent;
    }
  }
  return target;
}

/** Whether a directory entry (of any kind, even a dangling symlink) exists at p. */
async function existsAsEntry(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== 'ENOENT' && code !== 'ENOTDIR';
  }
}
