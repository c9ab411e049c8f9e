# The pipeline with candle's CUDA backend, for the GPU training CronJob (nvidia.com/gpu). CUDA 13.0: the
# driver on the GPU nodes must support it (driver >= 580).
#   docker build -f deployment/dockerfiles/trialflow-pipeline-cuda.Dockerfile -t ghcr.io/trialflow/trialflow-pipeline-cuda:dev .
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04 AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# the build stage's tools are not shipped: their exact versions do not reach the image
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY xtask xtask
COPY config config
COPY pipelines pipelines
# 90 = H100/H200; set to the GPUs the training nodes have
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN cargo build --release --locked -p trialflow-cli --features cuda --bin trialflow

FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin trialflow
COPY --from=build /src/target/release/trialflow /usr/local/bin/trialflow
WORKDIR /app
COPY pipelines /app/pipelines
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/trialflow"]
CMD ["--config", "/etc/trialflow/config.yaml", "--json-logs", "pipeline", "training"]
