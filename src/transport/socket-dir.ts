import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PREFIX = 'pyvisor-';
// `pyvisor-<pid>-<6 random characters>`, as mkdtemp names it.
const NAME = /^pyvisor-(\d+)-[A-Za-z0-9]{6}$/;
// sockaddr_un holds 108 bytes: a longer TMPDIR falls back to /tmp.
const MAX_SOCKET_PATH = 100;

const live = new Set<string>();
let exitHook = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the socket directories left behind by Node processes that are gone (SIGKILL). */
function removeStale(base: string): void {
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const name of names) {
    const match = NAME.exec(name);
    if (!match) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || alive(pid)) continue;
    const path = join(base, name);
    try {
      if (uid !== undefined && statSync(path).uid !== uid) continue;
      rmSync(path, { recursive: true, force: true });
    } catch {
      // Another process cleaned it first, or it is not ours to remove.
    }
  }
}

/**
 * Creates a private (0700) directory for a fork server's socket, after removing stale ones of
 * dead Node processes. It is removed by {@link removeSocketDir}, or when Node exits.
 */
export function createSocketDir(): { dir: string; socket: string } {
  let base = tmpdir();
  if (join(base, `${PREFIX}${process.pid}-XXXXXX`, 's').length > MAX_SOCKET_PATH) base = '/tmp';
  removeStale(base);
  // mkdtemp creates the directory with mode 0700.
  const dir = mkdtempSync(join(base, `${PREFIX}${process.pid}-`));
  live.add(dir);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const path of live) rmSync(path, { recursive: true, force: true });
    });
  }
  return { dir, socket: join(dir, 's') };
}

/** Removes a directory made by {@link createSocketDir}. */
export function removeSocketDir(dir: string): void {
  live.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}
