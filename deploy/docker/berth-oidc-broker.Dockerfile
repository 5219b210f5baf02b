# syntax=docker/dockerfile:1.7
# Berth OIDC client-credentials token broker sidecar
# Build from the repository root:
#   docker build -f deploy/docker/berth-oidc-broker.Dockerfile -t ghcr.io/skaphos/berth-oidc-broker:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth-oidc-broker --bin berth-oidc-broker \
    && install -D -m 0755 target/release/berth-oidc-broker /out/berth-oidc-broker

# glibc + libgcc + CA certificates, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="berth-oidc-broker" \
      org.opencontainers.image.description="Berth OIDC client-credentials token broker sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/skaphos/berth" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/berth-oidc-broker /usr/local/bin/berth-oidc-broker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth-oidc-broker"]
