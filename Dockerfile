# Multi-stage build: compile in the Rust image, run in a slim Debian image as
# a non-root user. Mount your config at /etc/creditgate/creditgate.toml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/creditgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin creditgate
COPY --from=build /src/target/release/creditgate /usr/local/bin/creditgate
COPY config/creditgate.toml /etc/creditgate/creditgate.toml
USER creditgate
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/creditgate"]
CMD ["serve", "--config", "/etc/creditgate/creditgate.toml"]
