# Stand-in for oven/bun:<version>-slim: Debian bookworm (minbase), Bun from the npm registry
# package @oven/bun-linux-x64, and the image's unprivileged `bun` user (uid 1000).
FROM chat-stand-in/debian:bookworm
ADD bun.tgz /opt/bun/
RUN mv /opt/bun/package/bin/bun /usr/local/bin/bun && rm -rf /opt/bun \
 && ln -s bun /usr/local/bin/bunx \
 && groupadd --gid 1000 bun && useradd --uid 1000 --gid bun --create-home --shell /bin/sh bun \
 && bun --version
WORKDIR /home/bun/app
CMD ["bun"]
