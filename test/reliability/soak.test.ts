// Suite 7 (fast subset): a 6-second soak, run as a child process that must exit by itself after
// close() (a leaked handle or timer would keep it alive). Full run: SOAK_SECONDS=600 node
// --expose-gc --import tsx scripts/reliability/soak.ts.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

describe('soak', () => {
  it('mixed load with cancels, timeouts and kills: flat fds and timers, no leaked listeners, exits by itself', async () => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', 'scripts/reliability/soak.ts'],
      {
        cwd: REPO,
        env: { ...process.env, SOAK_SECONDS: '6', SOAK_KILL_EVERY: '1000' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
    });
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 60_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(err).toBe('');
    const result = JSON.parse(out) as { violations: string[]; figures: { calls: number } };
    expect(result.violations).toEqual([]);
    expect(result.figures.calls).toBeGreaterThan(100);
    // 0: ended by itself; 3: kept alive by a leaked handle after close(); null: hung.
    expect(code).toBe(0);
  }, 90_000);
});
