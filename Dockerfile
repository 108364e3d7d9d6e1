# One image per fluxgate function, built by name:
#
#   docker build --build-arg FUNCTION=fluxgate-ingest -t fluxgate-ingest .
#
# FUNCTION is a binary name from functions/*/Cargo.toml ([[bin]] name): fluxgate-ingest,
# fluxgate-outbox-drain, fluxgate-worker, fluxgate-replay, fluxgate-metrics, fluxgate-local.
# It is also the package's name: the image builds that one package (`-p`), with the cargo
# features FEATURES (default `gcp`: the Google clients the function calls on Cloud Run, and
# neither the AWS SDK nor the clients of the other functions). fluxgate-local always carries
# every cloud client (SQS, Secrets Manager, Pub/Sub, BigQuery) for whatever queue and warehouse
# its settings name; its `gcp` feature adds nothing, so the default builds it too.
#
# Final image: distroless/cc (glibc, libgcc, CA certificates, a nonroot user, no shell), not a
# static musl binary. The binaries link glibc from the builder (Debian 12 both sides, so the
# versions match), glibc's allocator copes far better than musl's with tokio's many threads,
# and no cross toolchain is needed for the bundled SQLite and ring's C code. The CA bundle is
# what TLS to Google APIs verifies against. About 25 MB of base image plus one stripped binary.
#
# Cache: cargo-chef compiles the function's dependencies, with its features, in a layer that
# depends only on Cargo.toml / Cargo.lock (the recipe) and on FUNCTION and FEATURES, not on our
# sources; so a source change rebuilds only the workspace crates. Each function has its own
# dependency layer: cargo compiles a dependency once per feature set, and the functions'
# feature sets differ on purpose (ingest links no BigQuery client, the worker no Pub/Sub).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# Pinned so the cached layers do not move under us.
RUN cargo install cargo-chef --version 0.1.77 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG FUNCTION
ARG FEATURES=gcp
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only (the release profile of Cargo.toml: LTO, one codegen unit, stripped).
RUN test -n "${FUNCTION}" || { echo "build with --build-arg FUNCTION=<binary name>" >&2; exit 1; } \
 && cargo chef cook --release --locked -p "${FUNCTION}" --no-default-features \
      --features "${FEATURES}" --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p "${FUNCTION}" --no-default-features --features "${FEATURES}" \
 && mkdir -p /out \
 && cp "target/release/${FUNCTION}" /out/function

FROM gcr.io/distroless/cc-debian12:nonroot
ARG FUNCTION
LABEL org.opencontainers.image.title="${FUNCTION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/function /usr/local/bin/function
# Cloud Run sets PORT; 8080 is also the functions' default.
ENV PORT=8080 \
    FLUXGATE_LOG_FORMAT=json
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/function"]
