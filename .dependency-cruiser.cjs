// `npm run check:deps`: the layer rule of STYLE.md habit 14 and docs/architecture.md ("Layers"), checked in CI.
// Dynamic imports count: a lazily loaded module is still a dependency.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'No import cycle anywhere (type-only imports included).',
      from: {},
      to: { circular: true },
    },
    {
      name: 'services-stay-at-the-bottom',
      severity: 'error',
      comment: 'services/ (broker, bus, common, protocol) imports nothing from the layers above it.',
      from: { path: '^services/' },
      to: { path: '^(gateways|dashboard|utils|cli|bin)/' },
    },
    {
      name: 'gateways-below-the-assembly',
      severity: 'error',
      comment: 'gateways/ imports neither the assembly (cli/, bin/) nor the dashboard or the test tools.',
      from: { path: '^gateways/' },
      to: { path: '^(cli|bin|dashboard|utils)/' },
    },
    {
      name: 'gateways-not-into-the-broker',
      severity: 'error',
      comment: 'A gateway shares code with the broker only through services/common and services/protocol.',
      from: { path: '^gateways/' },
      to: { path: '^services/broker/' },
    },
    {
      name: 'dashboard-below-the-assembly',
      severity: 'error',
      comment: 'dashboard/ imports neither the assembly, the gateways nor the test tools.',
      from: { path: '^dashboard/' },
      to: { path: '^(cli|bin|gateways|utils)/' },
    },
    {
      name: 'nothing-imports-the-assembly',
      severity: 'error',
      comment: 'cli/ is the top: only bin/ and cli/ itself (and tests) import it.',
      from: { path: '^(services|gateways|dashboard|utils)/' },
      to: { path: '^cli/' },
    },
    {
      name: 'demo-nodes-load-lazily',
      severity: 'error',
      comment: 'The assembly reaches the test nodes of utils/ only by dynamic import (`node`, `up --demo`).',
      from: { path: '^cli/' },
      to: { path: '^utils/', dependencyTypesNot: ['dynamic-import'] },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'Every relative import resolves to a file.',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.json'],
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
};
