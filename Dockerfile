# Multi-stage build of dicom-pipeline (used by docker-compose.yml; not built in CI, which has
# no Docker engine — scripts/test.sh exercises the same `cargo build --release --locked`).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The Doris DDL is compiled in (include_str!).
COPY sql ./sql
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin dicom-pipeline

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 dicom
COPY --from=build /src/target/release/dicom-pipeline /usr/local/bin/dicom-pipeline
USER dicom
ENTRYPOINT ["dicom-pipeline"]
