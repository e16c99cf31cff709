# botmeter: one image, three commands (`run`, `serve`, `simulate`), as docker-compose.yml uses it.
#
# Dependencies (librdkafka's cmake build above all) are compiled in their own layer with cargo-chef,
# from a recipe of the manifests and Cargo.lock alone: editing botmeter's sources reuses that layer
# and recompiles only the workspace's crates.
FROM rust:1.95-bookworm AS chef
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin botmeter

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin botmeter
COPY . .
RUN cargo build --release --locked --bin botmeter

FROM debian:bookworm-slim
# curl: the compose health checks call /readyz with it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --uid 10001 botmeter \
 && install -d -o botmeter -g botmeter -m 0750 /var/lib/botmeter
COPY --from=build /src/target/release/botmeter /usr/local/bin/botmeter
# Not root. /var/lib/botmeter is the user's: a named volume mounted there (the simulator's ground
# truth in docker-compose.yml) starts with this owner, so uid 10001 can write it.
USER botmeter
WORKDIR /var/lib/botmeter
ENTRYPOINT ["botmeter"]
CMD ["--help"]
