// Ed25519 signing keys. The key file is a PKCS#8 PEM private key, written 0600 in a 0700 directory;
// the public key is derived from it, or read from a separate SPKI PEM file for services that only verify.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';

export function defaultKeyFile(): string {
  return join(process.env.MYCELIUM_HOME ?? join(homedir(), '.mycelium'), 'key.pem');
}

export function publicKeyFileFor(keyFile: string): string {
  return keyFile.replace(/(\.pem)?$/, '.pub.pem');
}

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** Writes a new key pair; refuses to overwrite unless `force`. Returns the paths written. */
export function writeKeyPair(keyFile: string, force = false): { privatePath: string; publicPath: string } {
  const publicPath = publicKeyFileFor(keyFile);
  if (existsSync(keyFile) && !force) {
    throw new MyceliumError(ErrorCode.Config, `key file ${keyFile} exists; pass --force to replace it`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const dir = dirname(keyFile);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  chmodSync(keyFile, 0o600); // mode above only applies when the file is created
  writeFileSync(publicPath, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  return { privatePath: keyFile, publicPath };
}

/** Creates the key pair if the file does not exist yet (first run of `mycelium up`). */
export function ensureKeyPair(keyFile: string): boolean {
  if (existsSync(keyFile)) return false;
  writeKeyPair(keyFile);
  return true;
}

export function readPrivateKey(keyFile: string): KeyObject {
  try {
    return createPrivateKey(readFileSync(keyFile));
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `cannot read private key ${keyFile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Reads the verification key: the private key file if readable, else its `.pub.pem` neighbour. */
export function readPublicKey(keyFile: string): KeyObject {
  if (existsSync(keyFile)) {
    try {
      return createPublicKey(readFileSync(keyFile));
    } catch {
      // fall through to the .pub.pem file
    }
  }
  const pubPath = keyFile.endsWith('.pub.pem') ? keyFile : publicKeyFileFor(keyFile);
  try {
    return createPublicKey(readFileSync(pubPath));
  } catch (err) {
    throw new MyceliumError(
      ErrorCode.Config,
      `cannot read a key from ${keyFile} or ${pubPath}: run \`mycelium keys\` first (${(err as Error).message})`,
      { cause: err },
    );
  }
}
