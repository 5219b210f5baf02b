# syntax=docker/dockerfile:1.7
# Berth command-line client
# Build from the repository root:
#   docker build -f deploy/docker/berth.Dockerfile -t ghcr.io/skaphos/berth:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth-cli --bin berth \
    && install -D -m 0755 target/release/berth /out/berth

# glibc + libgcc + CA certificates, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="Berth command-line client" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/skaphos/berth" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/berth /usr/local/bin/berth
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth"]
