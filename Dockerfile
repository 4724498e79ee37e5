# syntax=docker/dockerfile:1
# pushwire container image.
#   docker build -t pushwire .
#   docker run -p 8080:8080 pushwire                      # config/docker.toml, memory broker
#   docker run -p 8080:8080 -e PUSHWIRE_BROKER__KIND=redis -e PUSHWIRE_REDIS__URL=redis://redis:6379 pushwire
#   docker run -p 8080:8080 -v $PWD/config/cluster.toml:/etc/pushwire/pushwire.toml:ro pushwire
# Configuration: embedded defaults, then the file named by PUSHWIRE_CONFIG (the image ships
# config/docker.toml there: listen on 0.0.0.0:8080, JSON logs; a mounted file replaces it
# entirely), then PUSHWIRE_<SECTION>__<KEY> variables (and PUSHWIRE_NODE_NAME,
# PUSHWIRE_ALLOW_ANONYMOUS), which win over the file. The image sets none of those, so
# nothing overrides a mounted file. A PUSHWIRE_<SECTION>__<KEY> naming no key is refused at
# startup; other PUSHWIRE_* variables (no `__`) are not configuration and are ignored
# (docs/configuration.md).

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first: this layer is rebuilt only when a manifest or the lock file changes.
# Every workspace member's manifest is needed to resolve the workspace; stub sources let
# cargo compile every dependency without the real code.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked -p pushwire --bin pushwire \
    && rm -rf src loadtest/src \
        target/release/pushwire target/release/deps/pushwire-* \
        target/release/deps/libpushwire-* target/release/.fingerprint/pushwire-*

# The real sources. touch: COPY keeps the files' old timestamps, which could look older than
# the stub build.
COPY src src
# The browser client the server embeds (GET /client/pushwire.min.js), committed prebuilt.
COPY assets assets
COPY loadtest/src loadtest/src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p pushwire --bin pushwire \
    && cp target/release/pushwire /usr/local/bin/pushwire

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: rediss:// URLs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pushwire \
    && useradd --system --uid 10001 --gid pushwire --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pushwire \
    && mkdir -p /etc/pushwire
COPY --from=builder /usr/local/bin/pushwire /usr/local/bin/pushwire
COPY config/docker.toml /etc/pushwire/pushwire.toml

# Only the path of the config file: its settings live in the file, so a mounted one wins.
ENV PUSHWIRE_CONFIG=/etc/pushwire/pushwire.toml
USER 10001:10001
EXPOSE 8080
# SIGTERM drains: clients get close 1001; the process exits within server.shutdown_grace_secs.
STOPSIGNAL SIGTERM
# `pushwire healthcheck` reads the same configuration as the server and asks /health on its
# server.listen port, whatever port a mounted file or a variable chose.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["pushwire", "healthcheck"]
ENTRYPOINT ["pushwire"]
CMD ["serve"]
