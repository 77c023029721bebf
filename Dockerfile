# Builds the worker and the starter API into one small image; pick the binary with the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/certflow-worker /src/target/release/certflow-starter-api /usr/local/bin/
USER 65532:65532
CMD ["certflow-worker"]
