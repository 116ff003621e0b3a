// An idle pool does not keep Node alive (keepAlive: false, the default); pending calls do.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { allGone } from '../helpers.js';

const script = fileURLToPath(new URL('../fixtures/keep-alive-script.ts', import.meta.url));

function run(mode: string): Promise<{ code: number | null; lines: string[]; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  child.stderr.on('data', (chunk) => {
    err += chunk;
  });
  return new Promise((resolve, reject) => {
    // A generous bound: a pool that holds the loop would make the script run until this.
    const bound = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the script did not exit within 30 s; stdout: ${out}; stderr: ${err}`));
    }, 30_000);
    child.on('exit', (code) => {
      clearTimeout(bound);
      resolve({ code, lines: out.trim().split('\n'), stderr: err });
    });
  });
}

describe('keepAlive', () => {
  it('a script that forgets close() exits once its calls are done, and its workers go with it', async () => {
    const { code, lines, stderr } = await run('default');
    expect(stderr).not.toContain('Warning');
    // Exit code 13 would mean a pending top-level await: a call that did not hold the loop.
    expect(code).toBe(0);
    const result = JSON.parse(lines[0]!) as {
      sum: number;
      slept: unknown;
      items: number[];
      pids: number[];
    };
    expect(result).toMatchObject({ sum: 3, items: [0, 1, 2] });
    // The unref'd timer never fired: nothing held the loop after the last call.
    expect(lines).not.toContain('held');
    expect(result.pids).toHaveLength(2);
    await allGone(result.pids);
  });

  it('keepAlive: true holds the loop open while the pool is idle (until close)', async () => {
    const { code, lines } = await run('keepAlive');
    expect(code).toBe(0);
    expect(JSON.parse(lines[0]!)).toMatchObject({ sum: 3, items: [0, 1, 2] });
    expect(lines).toContain('held');
    const { pids } = JSON.parse(lines[0]!) as { pids: number[] };
    await allGone(pids);
  });
});
