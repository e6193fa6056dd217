"""Health check and API documentation."""

from tests.conftest import Server

REST_PATHS = {
    "/api/auth/register": {"post"},
    "/api/auth/token": {"post"},
    "/api/rooms": {"get", "post"},
    "/api/rooms/{name}/messages": {"get", "post"},
    "/api/admin/active-users": {"get"},
    "/healthz": {"get"},
}


def test_healthz(server: Server) -> None:
    """`/healthz` answers 200 `{"status": "ok"}` without a token."""
    r = server.client().get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_docs_page(server: Server) -> None:
    """`/docs` serves the interactive API documentation."""
    r = server.client().get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "/openapi.json" in r.text


def test_openapi_lists_rest_paths(server: Server) -> None:
    """`/openapi.json` lists every REST path with its methods, and no browser page."""
    r = server.client().get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path, methods in REST_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    assert "/login" not in paths
