# syntax=docker/dockerfile:1.7
# Berth operator for BerthLease resources
# Build from the repository root:
#   docker build -f deploy/docker/berth-operator.Dockerfile -t ghcr.io/skaphos/berth-operator:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth-operator --bin berth-operator \
    && install -D -m 0755 target/release/berth-operator /out/berth-operator

# glibc + libgcc + CA certificates, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="berth-operator" \
      org.opencontainers.image.description="Berth operator for BerthLease resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/skaphos/berth" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/berth-operator /usr/local/bin/berth-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth-operator"]
