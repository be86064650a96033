#!/usr/bin/env node
// CLI entry: loads the TypeScript sources through tsx (no build step needed after `npm ci`).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
