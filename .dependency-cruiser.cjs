/**
 * The dependency rule `npm test` runs (npm run lint:deps): src/ layers import only from layers to their left,
 * web/ only from util, graph, io, audio, models and export, and no import cycles. Tests are left out of the
 * layer rule (a test may use a higher layer's code as its harness), not out of the cycle rule.
 */
const LAYERS = ['util', 'graph', 'io', 'audio', 'data', 'models', 'features', 'eval', 'train', 'export', 'serve', 'cli'];
const WEB_OK = ['util', 'graph', 'io', 'audio', 'models', 'export'];
const NOT_TEST = '\\.test\\.ts$';

const layerRules = LAYERS.map((layer, i) => ({
  name: `layer-${layer}`,
  comment: `src/${layer} may import only from ${LAYERS.slice(0, i).join(', ') || 'itself'}`,
  severity: 'error',
  from: { path: `^src/${layer}/`, pathNot: NOT_TEST },
  to: { path: `^src/(${LAYERS.slice(i + 1).join('|') || '$^'})/` },
}));

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'layer-unknown',
      comment: `every src/ folder is one of the layers (${LAYERS.join(', ')}); src/index.ts is the package entry`,
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^src/', pathNot: `^src/((${LAYERS.join('|')})/|index\\.ts$)` },
    },
    {
      // No layer rule has src/index.ts as `from`: the package entry sits above every layer and imports from any.
      name: 'package-entry',
      comment: 'src/index.ts (the programmatic API) is what the package exports: no module in src/ or web/ imports it',
      severity: 'error',
      from: { pathNot: NOT_TEST },
      to: { path: '^src/index\\.ts$' },
    },
    {
      name: 'web-layers',
      comment: `web/ imports only from src/${WEB_OK.join(', src/')}`,
      severity: 'error',
      from: { path: '^web/', pathNot: NOT_TEST },
      to: { path: '^src/', pathNot: `^src/(${WEB_OK.join('|')})/` },
    },
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
