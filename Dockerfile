# botmeter: one image, three commands (`run`, `serve`, `simulate`), as docker-compose.yml uses it.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin botmeter

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 botmeter
COPY --from=build /src/target/release/botmeter /usr/local/bin/botmeter
USER botmeter
ENTRYPOINT ["botmeter"]
CMD ["--help"]
