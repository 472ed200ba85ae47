// Ed25519 signing keys. The key file is a PKCS#8 PEM private key, written 0600 in a 0700 directory;
// the public key is derived from it, or read from a separate SPKI PEM file for services that only verify.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { isSymlink, writeFileAtomic } from './files.ts';

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

/**
 * Writes a new key pair; refuses to overwrite unless `force`. Each file is written to a temporary file in
 * its directory and renamed into place, so a crash never leaves half a key, and a symlink at either path
 * is refused (never written through). Returns the paths written.
 */
export function writeKeyPair(
  keyFile: string,
  force = false,
  publicPath = publicKeyFileFor(keyFile),
): { privatePath: string; publicPath: string } {
  for (const path of [keyFile, publicPath]) {
    if (isSymlink(path)) {
      throw new MyceliumError(ErrorCode.Config, `${path} is a symbolic link; refusing to write a key through it`);
    }
  }
  if (existsSync(keyFile) && !force) {
    throw new MyceliumError(ErrorCode.Config, `key file ${keyFile} exists; pass --force to replace it`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileAtomic(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  writePublicKey(publicPath, publicKey);
  return { privatePath: keyFile, publicPath };
}

/** Writes the SPKI PEM public key (0644: it is meant to be shared with every verifier). */
export function writePublicKey(publicPath: string, publicKey: KeyObject): void {
  writeFileAtomic(publicPath, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
}

/**
 * Refuses a private key file that group or others may read or write, as ssh does: anyone who can read it can
 * mint admin tokens. Skipped on Windows, where the mode bits mean nothing.
 */
export function checkPrivateKeyMode(keyFile: string): void {
  checkOwnerOnly(keyFile, 'a private key');
}

/** Refuses a secret's file (`what`: "a token file") that group or others may read; Windows has no such mode. */
export function checkOwnerOnly(file: string, what: string): void {
  if (process.platform === 'win32') return;
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    const octal = mode.toString(8).padStart(4, '0');
    throw new MyceliumError(
      ErrorCode.Config,
      `permissions ${octal} for '${file}' are too open: ${what} must be accessible by its owner only ` +
        `(run: chmod 600 '${file}')`,
    );
  }
}

/** Creates the key pair if the file does not exist yet (first run of `mycelium up`). */
export function ensureKeyPair(keyFile: string): boolean {
  if (existsSync(keyFile)) return false;
  writeKeyPair(keyFile);
  return true;
}

export function readPrivateKey(keyFile: string): KeyObject {
  try {
    checkPrivateKeyMode(keyFile);
    return createPrivateKey(readFileSync(keyFile));
  } catch (err) {
    if (err instanceof MyceliumError) throw err;
    throw new MyceliumError(ErrorCode.Config, `cannot read private key ${keyFile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Reads the verification key from `keyFile`: a public key file as is; a private key file (mode checked as
 * for readPrivateKey) by deriving its public half; else its `.pub.pem` neighbour.
 */
export function readPublicKey(keyFile: string): KeyObject {
  if (existsSync(keyFile)) {
    let pem: Buffer | undefined;
    try {
      pem = readFileSync(keyFile);
    } catch {
      // unreadable (for example a private key of another user): fall through to the .pub.pem file
    }
    if (pem?.includes('PRIVATE KEY')) checkPrivateKeyMode(keyFile);
    if (pem) {
      try {
        return createPublicKey(pem);
      } catch {
        // fall through to the .pub.pem file
      }
    }
  }
  const pubPath = keyFile.endsWith('.pub.pem') ? keyFile : publicKeyFileFor(keyFile);
  return readPublicKeyFile(pubPath, `cannot read a key from ${keyFile} or ${pubPath}: run \`mycelium keys\` first`);
}

/** Reads an SPKI PEM public key, for services that only verify (`--public-key-file`). */
export function readPublicKeyFile(path: string, hint = `cannot read public key ${path}`): KeyObject {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `${hint} (${(err as Error).message})`, { cause: err });
  }
  if (pem.includes('PRIVATE KEY')) {
    throw new MyceliumError(
      ErrorCode.Config,
      `${path} holds a private key; give the public key (${publicKeyFileFor(path)}) to services that only verify`,
    );
  }
  try {
    return createPublicKey(pem);
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `${hint} (${(err as Error).message})`, { cause: err });
  }
}
