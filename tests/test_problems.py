from typing import Any

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def _assert_problem(res: Any, status: int, code: str) -> dict[str, Any]:
    assert res.status_code == status
    assert res.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = res.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    return body


async def test_unknown_path_is_a_404_problem(client: Any) -> None:
    _assert_problem(await client.http.get("/no/such/thing"), 404, "not_found")


async def test_wrong_method_is_a_405_problem(client: Any) -> None:
    res = await client.http.delete("/healthz")
    _assert_problem(res, 405, "method_not_allowed")
    assert "GET" in res.headers["allow"]


async def test_malformed_body_is_a_422_problem(client: Any) -> None:
    res = await client.http.post(
        "/api/v1/auth/otp/verify",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    body = _assert_problem(res, 422, "invalid_request")
    assert body["errors"]


async def test_openapi_and_docs_are_served(client: Any) -> None:
    spec = (await client.http.get("/openapi.json")).json()
    assert spec["info"]["title"] == "otp-service"
    assert "/readyz" in spec["paths"]
    res = await client.http.get("/docs")
    assert res.status_code == 200
    assert "swagger" in res.text.lower()


async def test_a_routes_refusal_policy_holds_under_a_root_path(client: Any) -> None:
    # The app served under /otp by a proxy that passes root_path: the malformed send is still
    # the send route's invalid_email (its policy travels with the matched route, not a path).
    import httpx

    transport = httpx.ASGITransport(
        app=client.http._transport.app, root_path="/otp", client=("203.0.113.9", 1)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as http:
        res = await http.post(
            "/otp/api/v1/auth/otp/send", content=b"{not json", headers={"content-type": "application/json"}
        )
        _assert_problem(res, 422, "invalid_email")


async def test_allow_lists_every_method_on_a_path(client: Any) -> None:
    res = await client.http.post("/api/v1/admin/suppressions/a@example.org")
    _assert_problem(res, 405, "method_not_allowed")
    assert res.headers["allow"] == "DELETE, GET, PUT"
