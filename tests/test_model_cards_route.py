"""/models/<id>: the card of every model a server names in its welcome, as the overlay links to it."""

from __future__ import annotations

import html

import pytest

from vibescope import data_dir
from vibescope.stream.cards import parse_front_matter

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def server():
    from vibescope.server.app import StreamServer
    from vibescope.server.config import ServerConfig

    return StreamServer(ServerConfig(pipeline="default"))


async def get(server, path: str, **headers: str):
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(server.app())) as client:
        resp = await client.get(path, headers=headers)
        return resp.status, resp.headers, await resp.text()


def cards() -> dict[str, str]:
    """front matter id -> markdown, of every card shipped in models/."""
    out = {}
    for path in sorted(data_dir("models").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        try:
            out[str(parse_front_matter(text)["id"])] = text
        except ValueError:
            continue
    return out


async def test_every_model_of_the_welcome_has_its_card(server):
    ids = {m["id"] for m in server.context.models.values()}
    assert {"silero-vad-6", "retinaface-mnet025", "vibescope-sep-v15", "tagf-gate-steps-sim-v1"} <= ids
    for model_id in ids:
        status, headers, body = await get(server, f"/models/{model_id}")
        assert status == 200, (model_id, body)
        assert headers["Content-Type"].startswith("text/html"), headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert f"<title>vibescope model card: {model_id}</title>" in body
        assert f"id: {model_id}" in body  # the card's own front matter


async def test_markdown_on_request_is_the_card_file(server):
    want = cards()["silero-vad-6"]
    for path, headers in (
        ("/models/silero-vad-6?format=md", {}),
        ("/models/silero-vad-6", {"Accept": "text/markdown"}),
    ):
        status, got_headers, body = await get(server, path, **headers)
        assert status == 200
        assert got_headers["Content-Type"].startswith("text/markdown"), got_headers
        assert body == want


async def test_card_text_is_escaped_in_html(server):
    for model_id, text in cards().items():
        status, _, body = await get(server, f"/models/{model_id}")
        assert status == 200, model_id
        assert f"{html.escape(text)}</pre>" in body, model_id


async def test_unknown_ids_are_404(server):
    for model_id in ("no-such-model", "..%2Fpyproject.toml", "separator-history", "x" * 200):
        status, _, body = await get(server, f"/models/{model_id}")
        assert status == 404, (model_id, status)
        assert "no model card" in body
