# syntax=docker/dockerfile:1
#
# One image for every vclink process:
#   hub               ENTRYPOINT (default)        /usr/local/bin/vclink-hub
#   agent             command: ["/usr/local/bin/vclink-agent", "run"]       (charts/agent)
#   registration Job  command: ["/usr/local/bin/vclink-agent", "register"]  (created by the agent)
# Kubernetes `command:` replaces ENTRYPOINT, so the agent Deployment and the Job the agent
# creates name their binary explicitly; the hub chart relies on the ENTRYPOINT.
#
# An air-gapped install mirrors this single image (no kubectl/curl helper images).
# `tests/packaging` checks that the paths named here exist in a release build and answer
# --help (no Docker engine runs in CI).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Every workspace member's manifest must be present for cargo to resolve the workspace,
# so the whole (filtered, see .dockerignore) tree is copied; the cache mounts keep
# dependency downloads and build artefacts between builds.
COPY . .
# --locked: the image is built from exactly the versions CI tested.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins -p vclink-hub -p vclink-agent \
 && install -D -m 0755 target/release/vclink-hub   /out/usr/local/bin/vclink-hub \
 && install -D -m 0755 target/release/vclink-agent /out/usr/local/bin/vclink-agent

# ---- run ---------------------------------------------------------------------------
# The binaries link glibc (no musl target), so the distroless "cc" flavour (glibc,
# libgcc, CA certificates, no shell, no package manager). rustls+ring need no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="vclink" \
      org.opencontainers.image.description="vclink hub, agent and registration Job: vClusters in Rancher downstream clusters appear in Rancher as clusters of their own" \
      org.opencontainers.image.source="https://github.com/vclink/vclink" \
      org.opencontainers.image.url="https://github.com/vclink/vclink" \
      org.opencontainers.image.documentation="https://github.com/vclink/vclink/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="vclink" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/ /
# uid/gid 65532 = distroless "nonroot"; numeric so runAsNonRoot can verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vclink-hub"]
