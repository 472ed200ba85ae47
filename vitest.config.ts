import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Installs the real peers (nats-server, mosquitto, libcoap, chromium) when missing, or stops with the one
    // command to run; a few stat calls when they are present. See docs/testing.md.
    globalSetup: ['test/setup/peers.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real servers; two workers match the two cores of the CI machine.
    maxWorkers: 2,
    reporters: process.env.CI ? ['default', ['json', { outputFile: 'test-artifacts/vitest.json' }]] : ['default'],
  },
});
