"""``/openapi.json`` and ``/docs``: the API's description, as data and as a page that works offline.

The page is plain HTML rendered here from the OpenAPI document, with its stylesheet inlined:
no script, font or stylesheet is fetched from anywhere.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

from aiohttp import web

from services.api import params
from services.api.openapi import document

Json = dict[str, Any]

routes = web.RouteTableDef()

METHODS = ("get", "post", "put", "patch", "delete")
EXAMPLE_TIME = "2024-05-01T12:00:00Z"


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    params.check_query(request, ())
    return web.Response(body=_document_bytes(), content_type="application/json")


@routes.get("/docs")
async def docs_page(request: web.Request) -> web.Response:
    params.check_query(request, ())
    return web.Response(text=render(document()), content_type="text/html")


@cache
def _document_bytes() -> bytes:
    return json.dumps(document(), indent=1).encode()


# --- rendering ---------------------------------------------------------------------------------


def render(doc: Json) -> str:
    """The whole page: introduction, a contents list by tag, then every operation."""
    info = doc["info"]
    by_tag: dict[str, list[tuple[str, str, Json]]] = {t["name"]: [] for t in doc["tags"]}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    toc, sections = [], []
    tag_text = {t["name"]: t["description"] for t in doc["tags"]}
    for tag, ops in by_tag.items():
        links = "".join(
            f'<li><a href="#{_anchor(op)}"><span class="m {m}">{m.upper()}</span> '
            f"<code>{escape(p)}</code></a></li>"
            for m, p, op in ops
        )
        toc.append(f"<li><strong>{escape(tag)}</strong><ul>{links}</ul></li>")
        body = "".join(_operation(doc, m, p, op) for m, p, op in ops)
        sections.append(
            f'<section><h2 id="tag-{escape(tag)}">{escape(tag)}</h2>'
            f"<p>{_inline(tag_text.get(tag, ''))}</p>{body}</section>"
        )
    intro = "".join(f"<p>{_inline(part)}</p>" for part in info["description"].split("\n\n"))
    return _template().substitute(
        title=escape(info["title"]),
        version=escape(info["version"]),
        intro=intro,
        toc="".join(toc),
        sections="".join(sections),
    )


@cache
def _template() -> Template:
    page = files("services.api").joinpath("static/docs.html").read_text(encoding="utf-8")
    return Template(page)


def _anchor(op: Json) -> str:
    return f"op-{escape(op['operationId'])}"


def _inline(text: str) -> str:
    """Escape ``text``, turning `code` spans and **bold** into markup."""
    out = escape(text.replace("\n", " "))
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _operation(doc: Json, method: str, path: str, op: Json) -> str:
    security: list[Json] = op["security"] if "security" in op else doc["security"]
    scopes: list[str] = [s for req in security for s in req.get("bearerAuth", [])]
    auth = (
        f'<span class="scope">key with scope <code>{escape(", ".join(scopes))}</code></span>'
        if scopes
        else '<span class="scope open">no key needed</span>'
    )
    parts = [
        f'<article id="{_anchor(op)}"><h3><span class="m {method}">{method.upper()}</span> '
        f"<code>{escape(path)}</code></h3>",
        f'<p class="summary">{_inline(op["summary"])} {auth}</p>',
    ]
    if "description" in op:
        parts.append(f"<p>{_inline(op['description'])}</p>")
    if op.get("parameters"):
        parts.append(_parameters(doc, op["parameters"]))
    if "requestBody" in op:
        parts.append(_request_body(doc, op["requestBody"]))
    parts.append(_responses(doc, op["responses"]))
    parts.append("</article>")
    return "".join(parts)


def _parameters(doc: Json, parameters: list[Json]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code>"
        f"{' <em>required</em>' if p.get('required') else ''}</td>"
        f"<td>{escape(p['in'])}</td><td>{_type(doc, p['schema'])}</td>"
        f"<td>{_inline(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return (
        "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th>"
        f"<th>meaning</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _request_body(doc: Json, body: Json) -> str:
    out = [f"<h4>Request body</h4><p>{_inline(body.get('description', ''))}</p>"]
    for media, content in body["content"].items():
        out.append(_content(doc, media, content["schema"]))
    return "".join(out)


def _responses(doc: Json, responses: Json) -> str:
    out = ["<h4>Responses</h4><dl class='responses'>"]
    for status, response in responses.items():
        cls = "ok" if status.startswith(("2", "3")) else "err"
        out.append(f'<dt class="{cls}">{escape(status)}</dt><dd>')
        out.append(f"<p>{_inline(response['description'])}</p>")
        for name in response.get("headers", {}):
            out.append(f"<p class='hdr'>header <code>{escape(name)}</code></p>")
        if cls == "ok":
            for media, content in response.get("content", {}).items():
                out.append(_content(doc, media, content["schema"]))
        out.append("</dd>")
    out.append("</dl>")
    return "".join(out)


def _content(doc: Json, media: str, schema: Json) -> str:
    resolved = _resolve(doc, schema)
    out = [f"<p class='media'><code>{escape(media)}</code> {_type(doc, schema)}</p>"]
    if resolved.get("properties"):
        out.append(_fields(doc, resolved))
    if media.endswith("json") and resolved.get("type") == "object":
        example = json.dumps(example_of(doc, schema), indent=2, ensure_ascii=False)
        out.append(f"<details><summary>Example</summary><pre>{escape(example)}</pre></details>")
    return "".join(out)


def _fields(doc: Json, schema: Json) -> str:
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code>{'' if name in required else ' <em>optional</em>'}"
        f"</td><td>{_type(doc, sub)}</td>"
        f"<td>{_inline(_resolve(doc, sub).get('description', ''))}</td></tr>"
        for name, sub in schema["properties"].items()
    )
    return (
        "<table class='fields'><thead><tr><th>field</th><th>type</th><th>meaning</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _resolve(doc: Json, schema: Json) -> Json:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _type(doc: Json, schema: Json) -> str:
    """A short, readable type: ``integer 1–200``, ``string | null``, ``array of Feed``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"<code>{escape(name)}</code>"
    if "anyOf" in schema:
        return " | ".join(_type(doc, s) for s in schema["anyOf"])
    if "allOf" in schema:
        return _type(doc, schema["allOf"][0])
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    kinds = schema.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    text = " | ".join(escape(k) for k in kinds)
    if "array" in kinds and "items" in schema:
        text = text.replace("array", f"array of {_type(doc, schema['items'])}")
    if "format" in schema:
        text += f" ({escape(schema['format'])})"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        text += f" {'' if low is None else low}–{'' if high is None else high}"
    if "maxLength" in schema:
        text += f", at most {schema['maxLength']} characters"
    if "maxItems" in schema:
        text += f", at most {schema['maxItems']} items"
    if "default" in schema:
        text += f", default <code>{escape(json.dumps(schema['default']))}</code>"
    return text


def example_of(doc: Json, schema: Json, depth: int = 0) -> Any:
    """A plausible value for ``schema``: its first example, enum value or a typed placeholder."""
    schema = _resolve(doc, schema)
    if depth > 6:
        return None
    if "examples" in schema:
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example_of(doc, schema["anyOf"][0], depth + 1)
    if "allOf" in schema:
        return example_of(doc, schema["allOf"][0], depth + 1)
    kinds = schema.get("type", "object")
    kind = next((k for k in kinds if k != "null"), "null") if isinstance(kinds, list) else kinds
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_of(doc, sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [example_of(doc, schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return schema.get("minimum", 1) or 1
    if kind == "boolean":
        return True
    if kind == "string":
        if schema.get("format") == "date-time":
            return EXAMPLE_TIME
        if schema.get("format") == "date":
            return EXAMPLE_TIME[:10]
        return "string"
    return None
