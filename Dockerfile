# One image for every Mycelium service; the compose file picks the subcommand.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production MYCELIUM_HOME=/keys
COPY package.json package-lock.json ./
# Dev dependencies are needed once, to compile the TypeScript (tsc: a type error fails the image build) and to
# build the dashboard page (--include=dev: under NODE_ENV=production npm ci would leave them out). `prepare` skips
# both here, as the sources are not copied yet.
RUN npm ci --include=dev --no-audit --no-fund
COPY . .
# /keys holds the private key (mounted only into containers that mint tokens), /pub the public key and the
# revocation list (mounted read-only into the brokers), /data the history's SQLite file. No VOLUME here: a
# container mounts only what it needs (a named volume copies the owner of the directory it is mounted on).
RUN npm run build && npm run build:dashboard && npm prune --omit=dev \
  && mkdir -p /keys /pub /data && chown node:node /keys /pub /data && chmod 700 /keys
USER node
# Compiled JavaScript only (the bundle, utils/build/bundle.mjs): tsx is a dev dependency, pruned above.
ENTRYPOINT ["node", "dist/bundle/main.js"]
CMD ["--help"]
