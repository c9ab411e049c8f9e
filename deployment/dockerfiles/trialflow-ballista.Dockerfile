# Ballista scheduler and executor for scaled-out preprocessing (`execution.engine: df://…`), at the
# Ballista release that matches the workspace's DataFusion (55).
#   docker build -f deployment/dockerfiles/trialflow-ballista.Dockerfile -t ghcr.io/trialflow/trialflow-ballista:dev .
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install --locked --root /out ballista-scheduler@55.0.0 ballista-executor@55.0.0

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ballista-scheduler /usr/local/bin/ballista-scheduler
COPY --from=build /out/bin/ballista-executor /usr/local/bin/ballista-executor
USER 65532:65532
EXPOSE 50050 50051 50052
ENTRYPOINT ["/usr/local/bin/ballista-scheduler"]
