import type { Command } from 'commander';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('synthesise a small labelled corpus, train and evaluate EmoSLLM on it (not built yet)')
    .action(() => {
      console.log('emosllm demo: not built yet. The engine comes first; see README.md for what works today.');
    });
}
