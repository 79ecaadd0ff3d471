"""/openapi.json describes predict and infer (bodies, binary extension, real 4xx answers, 422 only where the
server really sends it) and /docs
renders offline: the page and every file it loads come from the server itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import RunningServer
from swagger_ui_bundle import swagger_ui_path

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/{name}:predict"
INFER = "/v2/models/{name}/infer"


@pytest.fixture(scope="module")
def document(server: RunningServer) -> dict[str, Any]:
    with server.client() as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    return answer


def test_predict_and_infer_are_described_with_bodies_and_their_errors(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.0.3"
    predict, infer = document["paths"][PREDICT]["post"], document["paths"][INFER]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/V1PredictRequest"
    }
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {p["name"] for p in infer["parameters"]} == {"name", "Inference-Header-Content-Length"}
    for operation, answer in ((predict, "V1PredictResponse"), (infer, "V2InferResponse")):
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(answer)
        assert set(operation["responses"]["200"]["headers"]) == {"X-Model-Name", "X-Model-Version", "X-Model-Sha256"}
        assert sorted(operation["responses"]) == ["200", "400", "401", "404", "408", "413", "415", "422", "503", "504"]
        for status in ("400", "401", "404", "413", "503"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
        assert operation["security"] == [{"apiKey": []}, {"adminKey": []}]
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_no_phantom_422_and_every_operation_has_a_summary_and_an_answer(document: dict[str, Any]) -> None:
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) >= 21
    for path, item in document["paths"].items():
        for operation in item.values():  # 422: non-finite outputs on inference routes, no framework validation
            assert ("422" in operation["responses"]) == path.endswith((":predict", "/infer")), path
    for operation in operations:
        assert operation["summary"]
        assert "200" in operation["responses"]
    repository = document["paths"]["/v2/repository/models/{name}/load"]["post"]
    assert repository["security"] == [{"adminKey": []}]
    assert {"401", "403"} <= set(repository["responses"])
    assert "security" not in document["paths"]["/v2/health/ready"]["get"]


def test_docs_render_from_local_files_only(server: RunningServer) -> None:
    with server.client() as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "//" not in re.sub(r"<!DOCTYPE[^>]*>", "", page.text).replace("// ", "")  # no scheme-relative URLs
        assert "validatorUrl: null" in page.text  # else Swagger UI posts the document to an online validator
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(assets) == ["/docs/favicon-32x32.png", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"]
        kinds = {}
        for asset in assets:
            response = http.get(asset)
            assert response.status_code == 200
            assert response.content == (swagger_ui_path / asset.removeprefix("/docs/")).read_bytes()
            kinds[asset.rsplit(".", 1)[1]] = response.headers["content-type"].split(";")[0]
        assert kinds == {"png": "image/png", "js": "text/javascript", "css": "text/css"}
        assert http.get("/docs/../service/http/app.py").status_code == 404
        assert http.get("/docs/index.html").json() == {"error": "no docs asset 'index.html'"}
