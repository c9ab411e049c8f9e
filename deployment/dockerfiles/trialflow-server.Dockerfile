# The model server alone (TF Serving REST, Open Inference Protocol v2, /metrics): no DataFusion in the
# binary, a distroless non-root runtime. Build from the repository root:
#   docker build -f deployment/dockerfiles/trialflow-server.Dockerfile -t ghcr.io/trialflow/trialflow-server:dev .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest, and the binaries embed config/ and pipelines/.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY xtask xtask
COPY config config
COPY pipelines pipelines
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p trialflow-serve --bin trialflow-server

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/trialflow-server /usr/local/bin/trialflow-server
# distroless's `nonroot` user
USER 65532:65532
EXPOSE 8501
ENTRYPOINT ["/usr/local/bin/trialflow-server"]
CMD ["--config", "/etc/trialflow/config.yaml", "--host", "0.0.0.0", "--json-logs"]
