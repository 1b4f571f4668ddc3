"""Building blocks of the OpenAPI document (``services.api.openapi``).

Media types, the parameters many routes share, response and header objects, and ``op``,
which gives an operation the error responses every route of its kind can answer with.
"""

from __future__ import annotations

from typing import Any

from services.api import params
from services.api.context import MAX_LINE_BYTES
from services.api.openapi_schemas import ref
from services.core import search

Json = dict[str, Any]

PROBLEM = "application/problem+json"
JSON = "application/json"
OPML = "text/x-opml"

# Problem types every route can answer with, whatever its parameters.
BAD_REQUEST = ("invalid", "unknown_parameter", "invalid_encoding")


def param(name: str, where: str, schema: Json, description: str, *, required: bool = False) -> Json:
    """A parameter object; path parameters are always required."""
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


def path_id(noun: str) -> Json:
    """The ``{id}`` path parameter of a ``noun``."""
    return param("id", "path", {"type": "integer", "minimum": 1, "maximum": params.MAX_ID},
                 f"The {noun}'s id.") | {"example": 1}  # fmt: skip


LIMIT = param(
    "limit", "query",
    {"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT,
     "default": params.DEFAULT_LIMIT},
    f"Items per page, 1 to {params.MAX_LIMIT}.",
)  # fmt: skip
CURSOR = param(
    "cursor", "query", {"type": "string", "minLength": 1, "maxLength": params.MAX_CURSOR_CHARS},
    "Opaque: the `next_cursor` of the previous page of the same listing.",
)  # fmt: skip
PAGE = (LIMIT, CURSOR)


def problem(description: str, codes: tuple[str, ...] | None) -> Json:
    """A problem+json response; ``codes`` lists the ``type`` codes it may carry (None: any)."""
    schema: Json = ref("Problem")
    if codes:
        types = [f"urn:newsdesk:problem:{code}" for code in sorted(set(codes))]
        schema = {"allOf": [ref("Problem"), {"properties": {"type": {"enum": types}}}]}
    text = description
    if codes:
        text += " Types: " + ", ".join(f"`{c}`" for c in sorted(set(codes))) + "."
    return {"description": text, "content": {PROBLEM: {"schema": schema}}}


def reply(description: str, schema: Json, headers: Json | None = None) -> Json:
    """A JSON response with ``schema``, and ``headers`` when given."""
    response: Json = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


LINK_HEADER = {
    "Link": {
        "description": 'The next page, as `<url>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    }
}
LOCATION_HEADER = {
    "Location": {"description": "The new resource's path.", "schema": {"type": "string"}}
}
VALIDATOR_HEADERS = {
    "ETag": {"description": "A strong validator of this exact body; send it back as "
             "`If-None-Match` to be told `304` while it is current.",
             "schema": {"type": "string"}},
    "Cache-Control": {"description": "`no-cache`: a copy may be kept but must be revalidated.",
                      "schema": {"type": "string"}},
}  # fmt: skip
IF_NONE_MATCH = param(
    "If-None-Match", "header", {"type": "string", "maxLength": MAX_LINE_BYTES},
    "ETags of copies the client holds (or `*`): when one is the current body's, the answer is "
    "`304 Not Modified` without a body.",
)  # fmt: skip


def _common(*, body: bool, secured: bool) -> Json:
    """Responses shared by every route of the kind: auth, size, rate limit, storage."""
    responses: Json = {}
    if secured:
        responses["401"] = problem(
            "No API key was sent, or it is not a valid one.", ("unauthorized", "invalid_key")
        )
        responses["403"] = problem(
            "The API key lacks the scope this route needs.", ("insufficient_scope",)
        )
        responses["429"] = {
            **problem(
                "Too many requests for this key (or address); wait `Retry-After` seconds.",
                ("rate_limited",),
            ),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
        }
    if body:
        responses["413"] = problem("The request body is larger than 1 MiB.", ("too_large",))
    responses["500"] = problem("An unexpected failure (a bug); nothing internal is shown.",
                               ("internal",))  # fmt: skip
    responses["503"] = {
        **problem("The database is unavailable; retry after `Retry-After` seconds.",
                  ("storage_unavailable",)),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
    }  # fmt: skip
    return responses


def op(
    op_id: str, tag: str, summary: str, responses: Json, *, description: str = "",
    parameters: tuple[Json, ...] = (), body: Json | None = None, scope: str | None = "read",
) -> Json:  # fmt: skip
    """One operation, with the error responses every route of its kind can give."""
    operation: Json = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    operation["security"] = [{"bearerAuth": [scope]}] if scope else []
    texts = body is not None or any(p["in"] == "query" for p in parameters)
    codes = (*BAD_REQUEST, *(("invalid_text",) if texts else ()))
    codes += ("malformed_json",) if body is not None and JSON in body["content"] else ()
    every: Json = {"400": problem("A parameter or the body is malformed; see `param`.", codes)}
    # aiohttp's HTTP parser refuses oversized request lines and headers before any handler
    # runs, with a plain-text body.
    every["400"]["description"] += (
        f" A request line or header over {MAX_LINE_BYTES} bytes is refused by the HTTP layer"
        " before the API sees it, as `text/plain`."
    )
    every["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    every |= _common(body=body is not None or scope == "write", secured=scope is not None)
    operation["responses"] = dict(sorted((responses | every).items()))
    return operation


def conditional(path: Json) -> Json:
    """The GET of ``path`` as a route of the response cache: ETag, If-None-Match and 304."""
    operation = path["get"]
    operation["parameters"] = [*operation.get("parameters", []), IF_NONE_MATCH]
    ok = operation["responses"]["200"]
    ok["headers"] = {**ok.get("headers", {}), **VALIDATOR_HEADERS}
    operation["responses"]["304"] = {
        "description": "`If-None-Match` names the current body's ETag: the copy is current.",
        "headers": VALIDATOR_HEADERS,
    }
    operation["responses"] = dict(sorted(operation["responses"].items()))
    return path


def json_body(schema: Json, description: str) -> Json:
    """A required JSON request body."""
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


def not_found(noun: str) -> Json:
    """The 404 of a route addressing one ``noun`` by id."""
    return problem(f"No {noun} with that id.", ("not_found",))


def unprocessable(*codes: str) -> Json:
    """The 422 of a JSON body with a wrong field; ``codes`` adds problem types."""
    return problem("The body is JSON but a field is wrong; `param` names it.",
                   ("unprocessable", *codes))  # fmt: skip


ENTITY_PARAM = param(
    "entity", "query",
    {"type": "array", "maxItems": params.MAX_ENTITY_REFS,
     "items": {"type": "string", "minLength": 1, "maxLength": params.MAX_TEXT_PARAM}},
    "An entity id, name or alias; repeat it to require several entities (all must match). "
    "One value may also list ids separated by commas. An unknown id is a 404; an unknown "
    "name matches nothing.",
)  # fmt: skip
ENTITY_PARAM["style"], ENTITY_PARAM["explode"] = "form", True


SEARCH_PARAM = param(
    "q", "query", {"type": "string", "minLength": 1, "maxLength": search.MAX_QUERY_CHARS},
    "Full-text search in titles and text; matches stay newest first. Words are ANDed; "
    '`"a phrase"` matches words in order; `OR` (upper case) between terms matches either; '
    "`-word` or `-\"a phrase\"` excludes; `word*` is a prefix (3 characters or more). "
    "Words are letters and digits (other characters separate them) and are matched by their "
    f"English stem. At most {search.MAX_WORDS} words. A query this syntax does not allow "
    "(unbalanced quotes, nothing to search for, an OR at an end) is a 400 `invalid` naming `q`.",
)  # fmt: skip
