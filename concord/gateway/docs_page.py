"""
`GET /api/docs`: Swagger UI over `/api/v1/openapi.json`, served entirely from this node:
the assets come from the `swagger-ui-py` package (its `swagger_ui/static` folder, Swagger
UI 5, which reads OpenAPI 3.1), the page names no other host, and the validator badge
(which would call an external service) is off.
"""

from __future__ import annotations

import json
from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from concord.gateway.openapi import document
from concord.gateway.routes import API

__all__ = ["ASSETS", "PAGE", "routes"]

#: The Swagger UI assets shipped by the swagger-ui-py package.
ASSETS = Path(swagger_ui.__file__).parent / "static"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Concord HTTP API</title>
  <link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: %s,
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
""" % json.dumps(API + "/openapi.json")


async def _page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def _openapi(request: Request) -> Response:
    return JSONResponse(document())


async def _favicon(request: Request) -> Response:
    return FileResponse(ASSETS / "favicon-32x32.png", media_type="image/png")


def routes() -> list[BaseRoute]:
    """The docs routes (mounted before the API's catch-all)."""
    return [
        Route(API + "/openapi.json", _openapi, methods=["GET"]),
        Route("/api/docs", _page, methods=["GET"]),
        Mount("/api/docs/static", app=StaticFiles(directory=ASSETS), name="swagger-ui"),
        Route("/favicon.ico", _favicon, methods=["GET"]),
    ]
