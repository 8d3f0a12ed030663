# One node per container: 'federation serve --config' (docs/node.md, "Docker").
#   docker build -t hashlist-federation .
#   docker run -d -p 8080:8080 -v fedhome:/var/lib/federation hashlist-federation
# The home (databases, private/ keys) is the volume; node.toml goes in it
# (or set FEDERATION_CONFIG). Runs as an unprivileged user.
FROM python:3.11-slim

# Runtime wheels only (numpy, faiss-cpu, zstandard, msgpack, cryptography): no compiler.
COPY pyproject.toml README.md /src/
COPY federation /src/federation
RUN pip install --no-cache-dir /src && rm -rf /src

COPY deploy/docker-entrypoint.sh /usr/local/bin/federation-entrypoint
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/federation --create-home federation \
    && chmod 0700 /var/lib/federation

ENV FEDERATION_HOME=/var/lib/federation \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/federation"]
USER federation
WORKDIR /var/lib/federation
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["federation-entrypoint", "healthcheck"]
# exec form: the node is PID 1 and gets SIGTERM itself (it stops within 2 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["federation-entrypoint"]
CMD ["serve"]
