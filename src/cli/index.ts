#!/usr/bin/env node
import { demo } from './demo.js';

const [command = 'demo'] = process.argv.slice(2);

async function main(): Promise<number> {
  switch (command) {
    case 'demo':
      await demo();
      return 0;
    default:
      console.error(`pyvisor: unknown command '${command}'. Commands: demo`);
      return 2;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exitCode = 1;
  },
);
