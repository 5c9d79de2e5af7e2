FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY campaigns ./campaigns
COPY ivr ./ivr
COPY reports ./reports
COPY workers ./workers
COPY web ./web
COPY sim ./sim
# A fixed uid, so the recordings volume and backups keep one owner across rebuilds. The recordings folder
# exists in the image owned by that user: a new named volume mounted on it starts with that owner.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 990 sanlv \
    && useradd --system --uid 990 --gid sanlv --home-dir /app --no-create-home sanlv \
    && mkdir -p /var/lib/sanlv/recordings \
    && chown -R sanlv:sanlv /var/lib/sanlv
USER sanlv
ENTRYPOINT ["sanlv"]
CMD ["--help"]
