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
RUN pip install --no-cache-dir . && useradd --system --home /app sanlv
USER sanlv
ENTRYPOINT ["sanlv"]
CMD ["--help"]
