# syntax=docker/dockerfile:1
# The mlflow-operator image: `docker build -t mlflow-operator:0.1.0 .`
# Stage 1 compiles the release binary; stage 2 is distroless: glibc, CA certificates, no shell.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The profile the optimizer uses (pgo/README.md): hot code laid out together and optimized for
# speed, code no profiled run reached kept apart, where a running operator never maps it; and the
# linker's function order taken from it (every function that ran, hottest first).
COPY pgo ./pgo
# Not compiled: Cargo reads the bench targets' and the test harness's manifests to resolve.
COPY benches ./benches
COPY test-support ./test-support
# .git is not in the context: `mlflow-operator version` gets the commit from GIT_COMMIT
# (`--build-arg GIT_COMMIT=$(git rev-parse HEAD)`) and its build date from SOURCE_DATE_EPOCH
# (`--build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`); "unknown" without them.
ARG GIT_COMMIT=""
ARG SOURCE_DATE_EPOCH=""
# Cache mounts keep the crate registry and the target directory between builds. The sources are
# touched first: cargo compares mtimes, and a cached target built from another checkout at a later
# time would otherwise count older edited files as built (an image of stale code).
# The profile's path names its content: RUSTFLAGS change with it, so Cargo rebuilds every crate
# with a new profile (the dependencies are optimized with it too). --target keeps the flags off
# build scripts and proc macros. The profile needs rustc's LLVM 22 or later; `--build-arg PGO=off`
# builds without it. Relocations are packed (RELR; glibc 2.36): the table is read at start-up and
# would otherwise stay mapped, 0.6 MB of it.
ARG PGO=on
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/lib.rs src/main.rs \
 && host=$(rustc -vV | sed -n 's/^host: //p') \
 && export RUSTFLAGS="-Clink-arg=-Wl,-z,pack-relative-relocs" \
 && if [ "$PGO" = on ]; then \
      profile=/tmp/mlflow-operator-$(sha256sum pgo/mlflow-operator.profdata.gz | cut -c1-16).profdata \
      && order=/tmp/mlflow-operator-$(sha256sum pgo/symbol-order.txt.gz | cut -c1-16).order \
      && gzip -dc pgo/mlflow-operator.profdata.gz >"$profile" && gzip -dc pgo/symbol-order.txt.gz >"$order" \
      && RUSTFLAGS="$RUSTFLAGS -Cprofile-use=$profile -Cllvm-args=-profile-summary-cold-count=0 -Clink-arg=-Wl,-z,keep-text-section-prefix" \
      && RUSTFLAGS="$RUSTFLAGS -Clink-arg=-Wl,--symbol-ordering-file=$order -Clink-arg=-Wl,--no-warn-symbol-ordering"; \
    fi \
 && MLFLOW_OPERATOR_COMMIT="$GIT_COMMIT" cargo build --release --locked --bin mlflow-operator --target "$host" \
 && install -D -m 0755 "target/$host/release/mlflow-operator" /out/mlflow-operator

FROM gcr.io/distroless/cc-debian12:nonroot
# Keep VERSION equal to Cargo.toml's version and the chart's appVersion (.ci/run checks).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mlflow-operator" \
      org.opencontainers.image.description="Kubernetes operator that makes training pods log to MLflow with one label" \
      org.opencontainers.image.source="https://github.com/mlflow-operator/mlflow-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mlflow-operator /usr/local/bin/mlflow-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mlflow-operator"]
CMD ["run"]
