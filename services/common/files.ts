// Writing secrets and shared state safely: a temporary file in the same directory, then rename.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';

/** True when `path` is a symbolic link (dangling or not); false when it does not exist. */
export function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Writes `text` to `file` atomically with `mode`: readers see the old file or the new one, never half of it.
 * The temporary file is created with O_CREAT|O_EXCL ('wx'), which never follows a symlink planted at its name,
 * and rename(2) replaces a link at `file` instead of writing through it. A symlink at `file` is still refused
 * outright: it almost always means someone wants us to write where it points.
 */
export function writeFileAtomic(file: string, text: string, mode: number): void {
  if (isSymlink(file)) throw new MyceliumError(ErrorCode.Config, `${file} is a symbolic link; refusing to replace it`);
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, file);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    try {
      unlinkSync(tmp);
    } catch {
      // renamed or never written
    }
    throw err;
  }
}
