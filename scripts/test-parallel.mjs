#!/usr/bin/env node
// Runs the Python unit tests and the vitest suite at the same time (the Python tests mostly wait
// on their worker processes, so they cost little next to vitest on two cores). vitest's output is
// streamed; the Python tests' output is printed when they finish. Exits non-zero if either fails.
import { spawn } from 'node:child_process';

function run(command, args, { buffer }) {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      stdio: buffer ? ['ignore', 'pipe', 'pipe'] : 'inherit',
      env: process.env,
    });
    let output = '';
    if (buffer) {
      child.stdout.on('data', (d) => {
        output += d;
      });
      child.stderr.on('data', (d) => {
        output += d;
      });
    }
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), output }));
  });
}

const python = run('python3', ['-m', 'unittest', 'discover', '-s', 'python/tests'], {
  buffer: true,
});
const vitest = run('npx', ['vitest', 'run'], { buffer: false });
const [py, vt] = await Promise.all([python, vitest]);
process.stdout.write(`\n--- python3 -m unittest discover -s python/tests ---\n${py.output}`);
if (py.code !== 0) console.error(`Python tests failed (exit ${py.code})`);
if (vt.code !== 0) console.error(`vitest failed (exit ${vt.code})`);
process.exit(py.code !== 0 ? py.code : vt.code);
