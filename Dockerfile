# One image for the worker and the starter API; the command picks the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/certflow-worker /src/target/release/certflow-starter-api /usr/local/bin/
USER 65532:65532
WORKDIR /var/lib/certflow
CMD ["certflow-worker"]
