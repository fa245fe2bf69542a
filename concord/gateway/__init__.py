"""
The HTTP/JSON gateway (docs/http.md): REST routes, Server-Sent Events and an OpenAPI
document over the wire protocol, served by the node's `http` child process.

    routes.py     the route table (route -> wire op)
    codec.py      query parameters, bodies, the HTTP status of every error code
    app.py        the Starlette app: each request is one wire request (concord.aio)
    sse.py        GET /api/v1/watch through the Python subscriber
    openapi.py    the OpenAPI 3.1 document, generated from the tables
    docs_page.py  /api/docs: Swagger UI from a pip package, no external URL
    process.py    the supervised child: uvicorn on [http] port

An adapter: depends on the client, the wire table and the errors, never on the node.
"""
