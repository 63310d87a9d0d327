# creditgate container image. Two stages: compile in the Rust image, run in
# Debian slim (same Debian release, so the same glibc) as an unprivileged
# numeric user. Build with `docker build -t creditgate .` from the
# repository root; see docs/operations.md for running it.
#
# Base tags are pinned (bump them together: the builder's Debian release
# must match the runtime's).
FROM rust:1.88.0-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself. `touch` makes sure cargo rebuilds it rather than trust
# the placeholder's fingerprint (COPY keeps the files' old mtimes).
COPY src ./src
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && strip target/release/creditgate

FROM debian:bookworm-20250630-slim
# Vendors are reached over TLS with the roots built into the binary; the
# system bundle is there for anything that reads it. Copied rather than
# installed: the runtime stage runs no package manager.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/creditgate /usr/local/bin/creditgate
# Listens on 0.0.0.0; the admin token, Redis and the vendors come from the
# environment (see the file). Mount your own over it to change routes.
COPY deploy/creditgate.toml /etc/creditgate/creditgate.toml
ENV CREDITGATE_CONFIG=/etc/creditgate/creditgate.toml
# No account in /etc/passwd is needed: nothing reads the user's name or home.
USER 10001:10001
EXPOSE 8080 9090
# The binary is its own probe (no curl in the image): GET /healthz on the
# admin listener of the config above; exit 0 healthy, 1 not.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/creditgate", "probe", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/creditgate"]
CMD ["serve"]
