import type { KeyObject } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPrivateKey, readPublicKey, writeKeyPair } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import type { Role } from '../../services/protocol/messages.ts';

export interface TestKeys {
  dir: string;
  keyFile: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  token(role: Role, sub?: string, ttlSeconds?: number): Promise<string>;
}

/** A fresh key pair in a temporary directory. */
export function makeKeys(): TestKeys {
  const dir = mkdtempSync(join(tmpdir(), 'myc-keys-'));
  const keyFile = join(dir, 'key.pem');
  writeKeyPair(keyFile);
  const privateKey = readPrivateKey(keyFile);
  return {
    dir,
    keyFile,
    privateKey,
    publicKey: readPublicKey(keyFile),
    token: (role, sub = `${role}-test`, ttlSeconds = 600) => mintToken(privateKey, { role, sub, ttlSeconds }),
  };
}
