import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'pyvisor-pack-'));
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the npm package', () => {
  it('packs, installs into another project, type-checks under NodeNext and Bundler, and runs', () => {
    run('npm', ['pack', '--silent', '--pack-destination', work], root);
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toMatch(/^pyvisor-.*\.tgz$/);
    const app = join(work, 'app');
    run('mkdir', ['-p', app], work);
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'app', type: 'module', private: true }),
    );
    run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', join(work, tarball)],
      app,
    );
    writeFileSync(
      join(app, 'handlers.py'),
      'from pyvisor import handler\n\n@handler\ndef add(a, b):\n    return a + b\n',
    );
    const source = `import { createPool, PyvisorError, type PoolStats } from 'pyvisor';
import { workerMachine } from 'pyvisor/machines';
const pool = createPool({ script: './handlers.py', size: 1 });
const sum: number = await pool.call<number>('add', [1, 2]);
const stats: PoolStats = pool.stats();
console.log(JSON.stringify({ sum, workers: stats.workers.length, machine: workerMachine.id, isError: new PyvisorError('ERR_PROTOCOL', 'x') instanceof Error }));
await pool.close();
`;
    writeFileSync(join(app, 'main.ts'), source);
    for (const resolution of ['NodeNext', 'Bundler']) {
      const module = resolution === 'NodeNext' ? 'NodeNext' : 'ESNext';
      writeFileSync(
        join(app, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2022',
            module,
            moduleResolution: resolution,
            strict: true,
            noEmit: true,
            skipLibCheck: false,
            types: ['node'],
            typeRoots: [join(root, 'node_modules', '@types')],
          },
          files: ['main.ts'],
        }),
      );
      run(process.execPath, [tsc, '-p', 'tsconfig.json'], app);
    }
    writeFileSync(
      join(app, 'main.mjs'),
      source
        .replace(', type PoolStats', '')
        .replace(/: (number|PoolStats)/g, '')
        .replace('<number>', ''),
    );
    const out = JSON.parse(run(process.execPath, ['main.mjs'], app));
    expect(out).toEqual({ sum: 3, workers: 1, machine: 'worker', isError: true });
  }, 180_000);
});
