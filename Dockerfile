# syntax=docker/dockerfile:1
#
# Container images for cachelet.
#
#   docker build -t cachelet .                            # cache-server and cachectl
#   docker build --target function -t cachelet-function . # the example function
#
# The default image runs `cache-server` (its flags are the container's arguments) and also
# holds `cachectl`, so that `kubectl exec` and `docker run --entrypoint` can reach the
# command-line tool without a shell in the image.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories live in BuildKit cache mounts, so a rebuild after a
# source change recompiles only the workspace's own crates. A cache mount is not part of the
# image, so the binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cache-server -p cache-client --bins \
    && mkdir -p /out \
    && cp target/release/cache-server target/release/cachectl /out/

# The example function (`examples/function`), built on top of the stage above so that it
# shares its compiled dependencies.
FROM build AS build-function
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cachelet-function \
    && cp target/release/cachelet-function /out/

# distroless/cc has the C runtime that the binaries link (glibc, libgcc) and nothing else: no
# shell, no package manager. UID 65532 is its `nonroot` user, given as a number so that
# Kubernetes can check `runAsNonRoot` against it.
FROM gcr.io/distroless/cc-debian12:nonroot AS function
COPY --from=build-function /out/cachelet-function /usr/local/bin/cachelet-function
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cachelet-function"]

# The last stage is what a build without --target produces.
FROM gcr.io/distroless/cc-debian12:nonroot AS server
COPY --from=build /out/cache-server /out/cachectl /usr/local/bin/
USER 65532:65532
# 7070: gRPC (data, admin and peer calls); 9090: Prometheus text at /metrics (--metrics).
EXPOSE 7070 9090
ENTRYPOINT ["/usr/local/bin/cache-server"]
