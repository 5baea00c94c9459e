"""The verify link (OTP_VERIFY_LINK_TEMPLATE, CONTRACT §4): refused at start-up unless https with
both placeholders in the fragment; in both parts of the email in every locale, URL-encoded; and
the README's example page, opened in headless Chromium from a local server by following the link
of a delivered email, leaves the code unused until its button is pressed, then verifies it."""

import asyncio
import contextlib
import html
import itertools
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from otp_service.delivery.sender import Deliverer, Wording
from otp_service.settings import Settings, SettingsError, load_settings
from otp_service.trust.page import render_trust_page
from tests.support import drain, embedded_send_rate, unique_email

TEMPLATE = "https://app.example/verify#email={email}&code={code}"
README = Path(__file__).resolve().parents[1] / "README.md"
LINK = re.compile(r"Or open this link on the device where you requested it: (https://\S+)")


@pytest.mark.parametrize(("template", "why"), [
    ("http://app.example/verify#email={email}&code={code}", "https://"),
    ("https://app.example/verify?email={email}#code={code}", "after '#'"),
    ("https://app.example/verify?code={code}#email={email}", "after '#'"),
    ("https://app.example/verify#code={code}", "after '#'"),
    ("https://app.example/verify", "after '#'"),
    ("https://app.example/verify#e={email}&c={code}&x={other}", "only {email} and {code}"),
    ("https://#email={email}&code={code}", "https://"),
])  # fmt: skip
def test_a_template_that_could_leak_the_code_is_refused_at_start(template: str, why: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(why)) as refused:
        load_settings(verify_link_template=template)
    assert "OTP_VERIFY_LINK_TEMPLATE" in str(refused.value)


def deliverer(**overrides: Any) -> Deliverer:
    settings = load_settings(verify_link_template=TEMPLATE, **overrides)
    return Deliverer(settings=settings, primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]


@pytest.mark.parametrize("locale", ["en", "zh-CN", "bilingual"])
@pytest.mark.parametrize("repeated", [False, True], ids=["fresh", "re-sent"])
def test_the_link_is_in_both_parts_in_every_locale(locale: Any, repeated: bool) -> None:
    to = "Ann+Tag@example.org"
    wording = Wording(locale=locale, lifetime_seconds=200 if repeated else None, repeated=repeated)
    email = deliverer().build("email_otp", to, "012345", "otp-1-0", wording)
    link = "https://app.example/verify#email=Ann%2BTag%40example.org&code=012345"
    english, chinese = locale in ("en", "bilingual"), locale in ("zh-CN", "bilingual")
    assert email.text.count(link) == english + chinese
    assert email.html.count(f'href="{html.escape(link)}"') == english + chinese
    assert ("Verify my email" in email.html) is english
    assert ("验证我的邮箱" in email.html) is chinese
    # Without a template, no link at all.
    plain = Deliverer(settings=load_settings(), primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]
    assert "app.example" not in plain.build("email_otp", to, "012345", "k", wording).html


def test_the_trust_page_and_its_sample_show_the_link() -> None:
    page = render_trust_page(load_settings(verify_link_template=TEMPLATE))
    assert "link's fragment" in page
    assert "https://app.example/verify#email=you%40example.com&code=123456" in page
    assert "link's fragment" not in render_trust_page(load_settings())


def readme_page() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- verify-link-page -->\n```html\n(.*?)```", text, re.S)
    assert block is not None, "the README's example page is marked <!-- verify-link-page -->"
    page = block.group(1)
    assert len(page.strip().splitlines()) <= 17
    return page


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one browser websocket, a flattened
    session per tab): enough to open a link, read the page and press a button as a person does."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws, self._ids = ws, itertools.count(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, profile: Path) -> AsyncIterator["Chromium"]:
        chrome = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            active = profile / "DevToolsActivePort"  # Chromium writes its port and path here
            for _ in range(600):
                if active.exists() and len(lines := active.read_text().split()) == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("chromium did not open its DevTools port")
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_msg_size=0) as ws,
            ):
                yield cls(ws)
        finally:
            chrome.terminate()
            await chrome.wait()

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params,
                                  **({"sessionId": session} if session else {})})  # fmt: skip
        while True:
            message = await asyncio.wait_for(self._ws.receive_json(), 30)
            if message.get("id") == ident:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def open(self, url: str) -> str:
        """A new tab at url, loaded: its session id."""
        target = (await self.call("Target.createTarget", url=url))["targetId"]
        session: str = (await self.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        await self.until(session, "document.readyState === 'complete'")
        return session

    async def evaluate(self, session: str, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return reply["result"].get("value")

    async def until(self, session: str, expression: str) -> None:
        for _ in range(300):
            if await self.evaluate(session, expression):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never true: {expression}")

    async def press(self, session: str, selector: str) -> None:
        """A left click in the middle of the element, through the input pipeline (not el.click())."""
        box = await self.evaluate(
            session, f"(r => [r.x + r.width / 2, r.y + r.height / 2])"
            f"(document.querySelector({selector!r}).getBoundingClientRect())",
        )  # fmt: skip
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", session, type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)  # fmt: skip


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)"
)
async def test_the_readme_page_verifies_only_when_its_button_is_pressed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The integrator's app (aiohttp on loopback, standing in for https://app.example) serves the
    README's page at /verify and passes /api/v1/auth/otp/verify to the service, as a reverse
    proxy would. Chromium opens the delivered link, its origin swapped for the local one: first as
    a link scanner does (Defender opens links in a headless browser and runs their scripts),
    pressing nothing, which must leave the code unused; then as the person does, pressing the
    button, which verifies it (CONTRACT §4)."""
    async with open_app(make_settings(verify_link_template=TEMPLATE, email_provider="console")) as app:
        email = unique_email().replace("@", "+tag@")
        assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
        await drain(app)
        [link] = LINK.findall(capsys.readouterr().out)
        verified: list[int] = []

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=readme_page(), content_type="text/html")

        async def verify(request: web.Request) -> web.Response:
            res = await app.http.post("/api/v1/auth/otp/verify", content=await request.read(),
                                      headers={"content-type": "application/json"})  # fmt: skip
            verified.append(res.status_code)
            return web.Response(body=res.content, status=res.status_code, content_type="application/json")

        site = web.Application()
        site.router.add_get("/verify", page)
        site.router.add_post("/api/v1/auth/otp/verify", verify)
        runner = web.AppRunner(site, access_log=None)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        parts = urlsplit(link)
        local = f"http://127.0.0.1:{port}{parts.path}#{parts.fragment}"
        try:
            async with Chromium.launch(tmp_path / "chrome") as chromium:
                scanner = await chromium.open(local)
                await asyncio.sleep(2)  # its scripts have run; a scanner presses nothing
                assert verified == []  # the service saw no verify
                shown = "[document.body.innerText, document.querySelectorAll('button').length]"
                text, buttons = await chromium.evaluate(scanner, shown)
                assert (email in text, buttons) == (True, 1)  # the address and a button
                await chromium.call("Target.closeTarget", targetId=(await chromium.call(
                    "Target.getTargetInfo", scanner))["targetInfo"]["targetId"])  # fmt: skip

                person = await chromium.open(local)
                await chromium.press(person, "#go")
                await chromium.until(
                    person, "document.getElementById('status').textContent.startsWith('Verified')"
                )
                status = await chromium.evaluate(person, "document.getElementById('status').textContent")
        finally:
            await runner.cleanup()
        assert status == f"Verified: {email}"
        assert verified == [200]  # the code the scanner's visit left live
        # The code was used by the page's one verify: it verifies no more.
        again = await app.http.post(
            "/api/v1/auth/otp/verify", json={"email": email, "code": parts.fragment[-6:]}
        )
        assert again.json()["code"] == "code_expired"
