# One image for every Mycelium service; the compose file picks the subcommand.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production MYCELIUM_HOME=/keys
COPY package.json package-lock.json ./
# Dev dependencies are needed once, to build the dashboard; the sources run through tsx.
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build:dashboard && npm prune --omit=dev \
  && mkdir -p /keys && chown node:node /keys
USER node
VOLUME ["/keys"]
ENTRYPOINT ["node", "bin/mycelium.js"]
CMD ["--help"]
