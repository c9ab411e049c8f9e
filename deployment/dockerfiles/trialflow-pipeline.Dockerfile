# The pipeline (`trialflow pipeline full` and every other command), for the Kubernetes CronJob, and the
# Ballista scheduler and executors (`trialflow cluster scheduler|executor`) that run its SQL when the lake is big.
#   docker build -f deployment/dockerfiles/trialflow-pipeline.Dockerfile -t ghcr.io/trialflow/trialflow-pipeline:dev .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY xtask xtask
COPY config config
COPY pipelines pipelines
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p trialflow-cli --features ballista --bin trialflow

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/trialflow /usr/local/bin/trialflow
# Pipeline definitions and their SQL, read from the working directory (the binary also embeds them, and
# the Kubernetes manifests the deployment pipeline renders).
WORKDIR /app
COPY pipelines /app/pipelines
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/trialflow"]
CMD ["--config", "/etc/trialflow/config.yaml", "--json-logs", "pipeline", "full"]
