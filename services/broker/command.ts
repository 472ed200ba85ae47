import { createBus } from '../bus/index.ts';
import { defaultKeyFile, readPublicKey, readPublicKeyFile } from '../common/keys.ts';
import type { CommandSpec } from '../common/run.ts';
import { TokenPolicy } from '../common/token-policy.ts';
import { Broker } from './broker.ts';
import { brokerOptions } from './options.ts';

export const brokerCommand: CommandSpec<typeof brokerOptions> = {
  name: 'broker',
  summary: 'Run the broker: gateways connect to /gw, web clients to /ws, REST under /api/v1.',
  options: brokerOptions,
  build(config, log, shared) {
    const publicKey = config.publicKeyFile
      ? readPublicKeyFile(config.publicKeyFile)
      : readPublicKey(config.keyFile ?? defaultKeyFile());
    // `mycelium up` shares its in-process bus (the history service listens on it); it starts and stops it.
    const ownBus = shared?.bus === undefined;
    const bus =
      shared?.bus ?? (config.natsUrl ? createBus({ natsUrl: config.natsUrl, name: 'mycelium-broker' }) : undefined);
    // Max lifetime per role and the revocation list (revoked.json beside the key, or --revocation-file).
    const policy = new TokenPolicy(config, config.publicKeyFile ?? config.keyFile ?? defaultKeyFile(), log);
    const broker = new Broker(config, {
      publicKey,
      log,
      bus,
      revocations: policy.revocations,
      maxTtlSeconds: policy.maxTtlSeconds,
    });
    // The broker does not own a bus it was handed, so start and drain it around the broker here.
    return {
      async start() {
        await policy.start();
        if (ownBus) await bus?.start();
        await broker.start();
      },
      async stop() {
        await broker.stop();
        policy.stop();
        if (ownBus) await bus?.stop();
      },
    };
  },
};
