# pivot-fhir: a small runtime image with one binary. SQLite data (and the token signing key) in
# the /data volume by default; PostgreSQL by setting DATABASE_URL=postgres://USER@HOST:5432/DB.
#
#   docker build -t pivot-fhir .
#   docker run -p 8080:8080 -v pivot-data:/data pivot-fhir
#   docker run --rm -v pivot-data:/data pivot-fhir token --client-id me --scope 'system/*.cruds'

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pivot-fhir \
 && strip target/release/pivot-fhir

FROM debian:bookworm-slim
# libpq5 for PostgreSQL (it brings libssl3); SQLite is compiled in; CA certificates for
# Subscription endpoints and JWKS over https
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin pivot \
 && mkdir -p /data \
 && chown pivot:pivot /data
COPY --from=build /src/target/release/pivot-fhir /usr/local/bin/pivot-fhir
USER pivot:pivot
WORKDIR /data
ENV DATABASE_URL=sqlite:///data/pivot.db \
    PIVOT_DATA_DIR=/data \
    PIVOT_BIND=0.0.0.0:8080 \
    PIVOT_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
# docker stop sends SIGTERM: requests in flight finish (up to 30 s) before the process exits
STOPSIGNAL SIGTERM
ENTRYPOINT ["pivot-fhir"]
CMD ["serve"]
