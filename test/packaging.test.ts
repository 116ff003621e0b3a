import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'pyvisor-pack-'));
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs a command to completion without blocking this process (its timers, vitest's RPC). */
async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(cmd, args, {
      cwd,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/**
 * A copy of the package's sources with its own build, so that packing never writes to the
 * repository (its dist/ is shared with other runs, which may be rebuilding it at this moment).
 * What `prepack` does (`npm run build`) is done here with the same tsconfig, into the copy.
 */
async function stage(): Promise<string> {
  const dir = join(work, 'stage');
  for (const entry of ['package.json', 'README.md', 'LICENSE', 'python', 'examples', 'docs']) {
    if (existsSync(join(root, entry))) {
      cpSync(join(root, entry), join(dir, entry), {
        recursive: true,
        filter: (src) => !src.includes('__pycache__'),
      });
    }
  }
  await run(
    process.execPath,
    [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', join(dir, 'dist')],
    root,
  );
  return dir;
}

describe('the npm package', () => {
  it('packs, installs into another project, type-checks under NodeNext and Bundler, and runs', async () => {
    const staged = await stage();
    await run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', work], staged);
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toMatch(/^pyvisor-.*\.tgz$/);
    const app = join(work, 'app');
    mkdirSync(app, { recursive: true });
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'app', type: 'module', private: true }),
    );
    await run(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', join(work, tarball)],
      app,
    );
    writeFileSync(
      join(app, 'handlers.py'),
      'from pyvisor import handler\n\n@handler\ndef add(a, b):\n    return a + b\n',
    );
    const source = `import { createPool, ndarray, PyvisorError, sanitizeSnapshot, type NDArray, type PoolStats } from 'pyvisor';
import { workerMachine } from 'pyvisor/machines';
const pool = createPool({ script: './handlers.py', size: 1 });
const sum: number = await pool.call<number>('add', [1], { kwargs: { b: 2 } });
const stats: PoolStats = pool.stats();
const nd: NDArray = ndarray(new Float64Array([1, 2, 3, 4]), [2, 2]);
console.log(JSON.stringify({ sum, workers: stats.workers.length, machine: workerMachine.id, isError: new PyvisorError('ERR_PROTOCOL', 'x') instanceof Error, sanitize: typeof sanitizeSnapshot, nd: nd.dtype }));
await pool.close();
`;
    writeFileSync(join(app, 'main.ts'), source);
    // Both resolutions at once (two programs, two cores).
    await Promise.all(
      (['NodeNext', 'Bundler'] as const).map((resolution) => {
        const config = join(app, `tsconfig.${resolution}.json`);
        writeFileSync(
          config,
          JSON.stringify({
            compilerOptions: {
              target: 'ES2022',
              module: resolution === 'NodeNext' ? 'NodeNext' : 'ESNext',
              moduleResolution: resolution,
              strict: true,
              noEmit: true,
              // The shipped declarations (and what they import) are checked once, under
              // NodeNext: checking every .d.ts is most of the time of this test. Under Bundler
              // what matters is that the exports map resolves and main.ts type-checks.
              skipLibCheck: resolution !== 'NodeNext',
              types: ['node'],
              typeRoots: [join(root, 'node_modules', '@types')],
            },
            files: ['main.ts'],
          }),
        );
        return run(process.execPath, [tsc, '-p', config], app);
      }),
    );
    writeFileSync(
      join(app, 'main.mjs'),
      source
        .replace(', type NDArray, type PoolStats', '')
        .replace(/: (number|PoolStats|NDArray)/g, '')
        .replace('<number>', ''),
    );
    const out = JSON.parse(await run(process.execPath, ['main.mjs'], app));
    expect(out).toEqual({
      sum: 3,
      workers: 1,
      machine: 'worker',
      isError: true,
      sanitize: 'function',
      nd: 'float64',
    });
    // What the README links to ships with it.
    const installed = join(app, 'node_modules', 'pyvisor');
    for (const doc of [
      'api.md',
      'architecture.md',
      'cli.md',
      'protocol.md',
      'testing.md',
      'values.md',
    ]) {
      expect(existsSync(join(installed, 'docs', doc))).toBe(true);
    }
  }, 300_000);
});
