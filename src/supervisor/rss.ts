import { readFileSync } from 'node:fs';

// /proc/<pid>/statm counts pages; Node does not expose the page size, so it is derived once from
// this process's own statm and RSS (always a power of two; 4096 on most Linux machines).
let pageSize: number | null | undefined;

function pageBytes(): number | null {
  if (pageSize !== undefined) return pageSize;
  pageSize = null;
  try {
    const pages = Number(readFileSync('/proc/self/statm', 'latin1').split(' ')[1]);
    const rss = process.memoryUsage.rss();
    if (pages > 0) pageSize = 2 ** Math.round(Math.log2(rss / pages));
  } catch {
    // Not Linux (no /proc): RSS is not sampled.
  }
  return pageSize;
}

/**
 * Resident memory of process `pid` in bytes, from `/proc/<pid>/statm` (one small read, no
 * process spawned), or null where there is no `/proc` or the process is gone.
 */
export function residentBytes(pid: number): number | null {
  const page = pageBytes();
  if (page === null) return null;
  try {
    const resident = Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]);
    return Number.isFinite(resident) ? resident * page : null;
  } catch {
    return null;
  }
}
