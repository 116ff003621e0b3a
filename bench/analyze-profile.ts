/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by function, by file and by
 * area (pyvisor's src/, xstate, Node internals, GC, idle).
 *
 *   node --import tsx bench/analyze-profile.ts <file.cpuprofile> [--top 25] [--from <function>]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' } },
});
const file = positionals[0];
if (!file) throw new Error('usage: analyze-profile.ts <file.cpuprofile> [--top N]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const top = Number(values.top);

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const self = new Map<number, number>(); // node id -> µs
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  // timeDeltas[i] is the time before sample i; attribute the following delta to it.
  const dt = profile.timeDeltas[i + 1] ?? 0;
  self.set(id, (self.get(id) ?? 0) + dt);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function shortUrl(url: string): string {
  const m = /\/(src|bench|node_modules)\/(.*)$/.exec(url);
  if (!m) return url ? url.replace(/^node:/, 'node:') : '(native)';
  if (m[1] === 'node_modules') {
    const mod = m[2]!.split('/');
    return `${mod[0]!.startsWith('@') ? `${mod[0]}/${mod[1]}` : mod[0]}:${mod.at(-1)}`;
  }
  return `${m[1]}/${m[2]}`;
}

function area(url: string, name: string): string {
  if (name === '(garbage collector)') return 'GC';
  if (name === '(idle)') return 'idle (waiting for I/O)';
  if (name === '(program)') return '(program: native, not attributed)';
  if (url.includes('/src/')) return "pyvisor's own code (src/)";
  if (url.includes('/node_modules/xstate/')) return 'xstate';
  if (url.includes('/node_modules/eventemitter3/')) return 'eventemitter3';
  if (url.includes('/bench/')) return 'benchmark loop (bench/)';
  if (url.startsWith('node:')) return 'Node internals (streams, pipes, timers)';
  if (!url) return 'V8 builtins / native (JSON, Buffer, …)';
  return url;
}

const fnTimes = new Map<string, number>();
const areaTimes = new Map<string, number>();
const srcFnTimes = new Map<string, number>();
for (const [id, us] of self) {
  const n = byId.get(id)!;
  const { functionName, url, lineNumber } = n.callFrame;
  const name = functionName || '(anonymous)';
  const key = `${shortUrl(url)}:${name}${url ? `:${lineNumber + 1}` : ''}`;
  fnTimes.set(key, (fnTimes.get(key) ?? 0) + us);
  const a = area(url, name);
  areaTimes.set(a, (areaTimes.get(a) ?? 0) + us);
  if (url.includes('/src/')) srcFnTimes.set(key, (srcFnTimes.get(key) ?? 0) + us);
}

// Inclusive time of pyvisor's own frames as seen from their callers (self time of native code
// called from src/, e.g. JSON.parse inside the frame decoder, is charged to the src/ caller).
const inclusiveFromSrc = new Map<string, number>();
for (const [id, us] of self) {
  let cur: number | undefined = id;
  const seen = new Set<string>();
  while (cur !== undefined) {
    const n = byId.get(cur)!;
    if (n.callFrame.url.includes('/src/')) {
      const key = `${shortUrl(n.callFrame.url)}:${n.callFrame.functionName || '(anonymous)'}`;
      if (!seen.has(key)) {
        seen.add(key);
        inclusiveFromSrc.set(key, (inclusiveFromSrc.get(key) ?? 0) + us);
      }
    }
    cur = parent.get(cur);
  }
}

const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const ms = (us: number) => `${(us / 1000).toFixed(1).padStart(8)} ms`;
function print(title: string, map: Map<string, number>, n = top): void {
  console.log(`\n${title}`);
  for (const [k, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, n)) {
    console.log(`${ms(us)} ${pct(us)}  ${k}`);
  }
}
const busy = total - (areaTimes.get('idle (waiting for I/O)') ?? 0);
console.log(
  `${file}: ${(total / 1000).toFixed(0)} ms sampled, ${(busy / 1000).toFixed(0)} ms not idle`,
);
print('Self time by area', areaTimes, 20);
print(`Top ${top} functions by self time`, fnTimes);
print(`Top ${top} functions of pyvisor's src/ by self time`, srcFnTimes);
print(`Top ${top} functions of pyvisor's src/ by inclusive time`, inclusiveFromSrc);
