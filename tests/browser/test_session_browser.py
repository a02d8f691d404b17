"""The session browser (issue 12) in a real browser: the OS's headless Chromium driven by Playwright, against
a real gateway, a real nats-server and the services in-process on scripted backends that are slow enough
to watch. Screenshots go to test-artifacts/ (gitignored).

Without /usr/bin/chromium (``make browser`` installs it with apt-get as root) or Playwright, these skip."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.services.cluster import Cluster, start_all
from tests.services.test_gateway_sessions import SlowBackend
from tests.support import step
from trigreason.services.gateway import GatewaySettings, make_app, trace_id_of
from trigreason.services.runtime import Bus

pytestmark = pytest.mark.timeout(120)

CHROMIUM = os.environ.get("TRIGREASON_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-token"
SURE = (-0.01,) * 6  # perplexity 1.01: every token confident
# What the page is asked, and what the backends answer, step by step (trigreason: priming 1, k 2, m 1):
# 0 LRM priming; 1 SRM accepted; 2 SRM hesitates, accepted (run 1); 3 SRM hesitates again: intervention, the
# LRM writes it; 4 SRM all confident (r_s 1 > rho): offload, the LRM writes the answer.
QUESTION = "What is <b>3</b> + 4? <img src=x onerror=alert(1)>"
PARAMS = {"priming_steps": 1, "rho": 0.85, "k": 2, "m": 1, "tau": 1.05, "temperature": 0}
SRM_STEPS = [
    step("Three apples and four apples.", (-1.0, -0.01, -1.0, -2.5, -0.3)),
    step("Wait, <script>alert(1)</script> maybe I should recount.", (-1.0, -3.0, -0.5, -1.5)),
    step("Hmm, let me count them once more.", (-2.0, -1.0, -1.0, -4.0)),
    step("The total is seven.", SURE),
]
LRM_STEPS = [
    step("Let the apples be counted.", (-0.2,) * 5),
    step("Counting: 3 + 4 = 7.", (-0.2,) * 5),
    step("So \\boxed{7}.", (-0.1,) * 4),
]


def _chromium() -> str:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(
            f"no headless Chromium at {CHROMIUM}: `make browser` installs it (apt-get install chromium, as "
            "root); elsewhere install the OS's chromium package"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (uv sync installs the dev group)")
    return CHROMIUM


class Site:
    def __init__(self, url: str, http: aiohttp.ClientSession, streams: list[web.Request]) -> None:
        self.url = url
        self.http = http
        self.streams = streams  # the event-stream requests the gateway has had, in order

    def cut_streams(self) -> int:
        """Close the connections of the event streams open now, as a proxy dropping them would."""
        cut = 0
        for request in self.streams:
            if request.transport is not None and not request.transport.is_closing():
                request.transport.close()
                cut += 1
        return cut

    async def events(self, session_id: str) -> list[dict[str, Any]]:
        """The session's whole event stream, read as any client would."""
        out: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.get(f"{self.url}/v1/sessions/{session_id}/events", headers=headers) as resp:
            assert resp.status == 200
            current: dict[str, Any] = {}
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if current:
                        out.append(current)
                    current = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    current[key] = json.loads(value) if key == "data" else value
        return out


@pytest.fixture
async def site(cluster: Cluster) -> AsyncIterator[Site]:
    await start_all(
        cluster,
        SlowBackend("srm", 1.0, steps=SRM_STEPS, default=step("So \\boxed{7}.")),
        SlowBackend("lrm", 1.0, steps=LRM_STEPS, default=step("So \\boxed{7}.")),
    )
    async for s in _site(cluster):
        yield s


@pytest.fixture
async def judge_site(cluster: Cluster) -> AsyncIterator[Site]:
    """SpecReason: the judge (the LRM) scores the first SRM step 9 (accepted), the second 3 (rejected)."""
    await start_all(
        cluster,
        SlowBackend("srm", 0.5, steps=[step("We add 3 and 4."), step("That makes 8.")]),
        SlowBackend("lrm", 0.5, steps=[step("So \\boxed{7}.")], judge_scores=[9, 3]),
    )
    async for s in _site(cluster):
        yield s


@pytest.fixture
async def likelihood_site(cluster: Cluster) -> AsyncIterator[Site]:
    """Likelihood: the LRM finds the first SRM step likely (-0.2 a token), the second unlikely (-3)."""
    await start_all(
        cluster,
        SlowBackend("srm", 0.5, steps=[step("We add 3 and 4."), step("That makes 8.")]),
        SlowBackend("lrm", 0.5, steps=[step("So \\boxed{7}.")], score_logprobs=[-0.2, -3.0]),
    )
    async for s in _site(cluster):
        yield s


async def _site(cluster: Cluster) -> AsyncIterator[Site]:
    bus = await Bus.connect(cluster.settings, name="gateway")
    settings = GatewaySettings(
        api_tokens=(TOKEN,),
        sse_keepalive_s=0.5,
        trace_url_template="http://jaeger.invalid/trace/{trace_id}",
        profile="browser-test",
        default_params={"rho": 0.85, "priming_steps": 3},
    )
    app = make_app(bus, settings)
    streams: list[web.Request] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.endswith("/events"):
            streams.append(request)
        return await handler(request)

    app.middlewares.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            yield Site(f"http://127.0.0.1:{port}", http, streams)
    finally:
        await runner.cleanup()
        await bus.close()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    chromium = _chromium()
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))  # an alert() would be XSS
            yield page
            assert errors == [], errors
        finally:
            await browser.close()


async def _indexes(page: Any) -> list[str]:
    result: list[str] = await page.eval_on_selector_all("li.step", "els => els.map(e => e.dataset.index)")
    return result


async def test_start_watch_reload_and_badges(site: Site, page: Any) -> None:
    await page.goto(site.url + "/")
    # auth is on: the page asks for the token once
    await page.wait_for_selector("#auth:not([hidden])")
    await page.fill("#token", TOKEN)
    await page.click("#auth button")
    await page.wait_for_selector("#policy option", state="attached")
    assert await page.input_value("#policy") == "trigreason"
    defaults = json.loads(await page.input_value("#params"))
    assert defaults["rho"] == 0.85
    assert defaults["priming_steps"] == 3, "the profile's value"
    assert await page.input_value("#profile") == "browser-test"
    assert "policy" not in defaults
    await page.fill("#question", QUESTION)
    await page.fill("#params", json.dumps({**defaults, **PARAMS}))
    await page.screenshot(path=str(ARTIFACTS / "session-browser-form.png"), full_page=True)
    await page.click("#start-button")
    await page.wait_for_url("**/sessions/*")
    session_id = page.url.rsplit("/", 1)[1]

    # live: the first steps come while the session runs
    await page.wait_for_selector("li.step[data-index='0']", timeout=20_000)
    assert await page.text_content("#status") in ("queued", "running")
    await page.wait_for_selector("li.step[data-index='1']", timeout=20_000)
    assert await page.text_content("#status") == "running"
    assert await _indexes(page) == ["0", "1"]
    await page.screenshot(path=str(ARTIFACTS / "session-browser-live.png"), full_page=True)

    # reload mid-session: the steps come again from the stream, each once
    await page.reload()
    await page.wait_for_selector("li.step[data-index='1']", timeout=20_000)
    assert await page.text_content("#status") == "running", "the reload came before the end"

    # a dropped connection: the page resumes with Last-Event-ID, and no step comes twice
    await page.wait_for_selector("li.step[data-index='2']", timeout=20_000)
    assert await page.text_content("#status") == "running", "the cut came before the end"
    opened = len(site.streams)
    assert site.cut_streams() == 1
    await page.wait_for_selector("#status.finished", timeout=40_000)
    resumed = site.streams[opened:]
    assert resumed, "the page opened the stream again"
    assert int(resumed[0].headers.get("Last-Event-ID", "0")) > 0
    indexes = await _indexes(page)
    assert indexes == sorted(set(indexes), key=int), "no step twice, in order"
    await page.screenshot(path=str(ARTIFACTS / "session-browser.png"), full_page=True)

    events = await site.events(session_id)
    committed = {e["data"]["index"]: e["data"] for e in events if e["event"] == "committed"}
    verdicts = [e["data"] for e in events if e["event"] == "verdict"]
    finished = next(e["data"] for e in events if e["event"] == "finished")
    assert indexes == [str(i) for i in sorted(committed)] == ["0", "1", "2", "3", "4"]

    # each step coloured by the model that wrote it
    roles = await page.eval_on_selector_all("li.step", "els => els.map(e => e.dataset.role)")
    assert roles == [committed[i]["role"] for i in sorted(committed)] == ["lrm", "srm", "srm", "lrm", "lrm"]
    colours = await page.eval_on_selector_all(
        "li.step .body", "els => els.map(e => getComputedStyle(e).borderLeftColor)"
    )
    assert colours[0] == colours[3] != colours[1] == colours[2]

    # priming on the steps committed as priming
    for i, c in committed.items():
        badges = await page.eval_on_selector_all(
            f"li.step[data-index='{i}'] .body .meta .badge", "els => els.map(e => e.dataset.badge)"
        )
        assert ("priming" in badges) == (c["trigger"] == "priming"), (i, badges)

    # each replaced SRM draft, struck through, beside the LRM step that replaced it, with its reason
    replaced = [v for v in verdicts if v["decision"] == "replace"]
    assert [(v["step_index"], v["reason"]) for v in replaced] == [(3, "intervention"), (4, "offload")]
    for v in replaced:
        li = f"li.step[data-index='{v['step_index']}']"
        assert await page.get_attribute(li, "data-role") == "lrm"
        draft = await page.text_content(f"{li} .drafts .draft del")
        assert draft == v["candidate"]["step"]["text"]
        kind = await page.get_attribute(f"{li} .drafts .badge", "data-badge")
        assert kind == v["reason"]
        badge = await page.text_content(f"{li} .drafts .badge")
        if v["reason"] == "offload":
            assert f"r_s {v['r_s']:.2f} > ρ {PARAMS['rho']}" in badge
        else:  # the run that reached k, and the hesitation word highlighted
            run = v["candidate"]["context"]["hesitation_run"] + 1
            assert f"hesitation run {run} ≥ k {PARAMS['k']}" in badge
            assert await page.text_content(f"{li} .drafts mark.hes") == "Hmm"
    # the hesitating accepted step has its word highlighted too
    assert await page.text_content("li.step[data-index='2'] .body mark.hes") == "Wait"

    # a heat strip per SRM step: one cell per token of the accepted candidate
    accepted = {v["step_index"]: v for v in verdicts if v["decision"] == "accept"}
    for i in (1, 2):
        cells = await page.eval_on_selector_all(
            f"li.step[data-index='{i}'] .body .heat .tok", "els => els.map(e => Number(e.dataset.ppl))"
        )
        lps = accepted[i]["candidate"]["step"]["token_logprobs"]
        assert len(cells) == len(lps)
        assert cells == pytest.approx([2.718281828 ** (-lp) for lp in lps], rel=1e-3)

    # totals and the answer from the terminal event
    stats = finished["stats"]
    assert await page.text_content("#t-lrm-calls") == str(stats["lrm_calls"])
    assert await page.text_content("#t-wasted") == str(stats["srm_wasted_tokens"])
    assert await page.text_content("#t-ratio") == f"{100 * stats['srm_token_ratio']:.1f} %"
    assert await page.text_content("#answer") == finished["answer"] == "7"

    # model text is text: the question's and the steps' markup is shown, never run
    assert await page.text_content("#question") == QUESTION
    assert await page.locator("#question b, #question img, li.step script").count() == 0
    assert "<script>" in (await page.text_content("li.step[data-index='2'] .text") or "")

    # the list: the session, finished, with its ratio
    await page.goto(site.url + "/")
    row = f"#sessions tr[data-session-id='{session_id}']"
    await page.wait_for_selector(row)
    assert await page.text_content(f"{row} .status") == "finished"
    assert await page.text_content(f"{row} .ratio") == f"{100 * stats['srm_token_ratio']:.1f} %"
    assert await page.text_content(f"{row} td.question a") == QUESTION
    await page.screenshot(path=str(ARTIFACTS / "session-browser-list.png"), full_page=True)


async def test_the_pages_and_routes_without_a_browser(site: Site) -> None:
    """The pages are open (they hold no data); what they read needs the token."""
    async with site.http.get(site.url + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    async with site.http.get(site.url + "/sessions/abc") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
    async with site.http.get(site.url + "/sessions/a.b") as resp:
        assert resp.status == 400
    async with site.http.get(site.url + "/static/session.js") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/javascript"
    async with site.http.get(site.url + "/static/../_app.py") as resp:
        assert resp.status == 404
    async with site.http.get(site.url + "/v1/sessions") as resp:
        assert resp.status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with site.http.post(
        site.url + "/v1/sessions", json={"question": "What is 3 + 4?", "params": PARAMS}, headers=auth
    ) as resp:
        session_id = (await resp.json())["session_id"]
    for _ in range(50):
        async with site.http.get(site.url + "/v1/sessions?limit=5", headers=auth) as resp:
            listing = await resp.json()
        if listing["sessions"]:
            break
        await asyncio.sleep(0.1)
    assert listing["sessions"][0]["session_id"] == session_id
    assert listing["sessions"][0]["status"] in ("queued", "running")
    assert listing["trace_url_template"] == "http://jaeger.invalid/trace/{trace_id}"
    async with site.http.get(f"{site.url}/v1/sessions/{session_id}/trace", headers=auth) as resp:
        assert resp.status == 200
        trace = await resp.json()
    # no tracer in the test: the request carries no traceparent, and there is no link
    assert trace == {"trace_id": None, "url": None} or trace["url"].endswith(trace["trace_id"])
    async with site.http.get(f"{site.url}/v1/sessions/nope/trace", headers=auth) as resp:
        assert resp.status == 404
    async with site.http.get(site.url + "/v1/sessions?limit=0", headers=auth) as resp:
        assert resp.status == 400


def test_trace_id_from_traceparent() -> None:
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of({"traceparent": f"00-{tid}-00f067aa0ba902b7-01"}) == tid
    assert trace_id_of({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}) is None
    assert trace_id_of(None) is None


async def test_specreason_judge_badges(judge_site: Site, page: Any) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"question": "What is 3 + 4?", "policy": "specreason", "params": {"priming_steps": 0}}
    async with judge_site.http.post(judge_site.url + "/v1/sessions", json=body, headers=auth) as resp:
        session_id = (await resp.json())["session_id"]
    await page.goto(f"{judge_site.url}/sessions/{session_id}")
    await page.fill("#token", TOKEN)
    await page.click("#auth button")
    await page.wait_for_selector("#status.finished", timeout=30_000)
    await page.screenshot(path=str(ARTIFACTS / "session-browser-specreason.png"), full_page=True)
    events = await judge_site.events(session_id)
    verdicts = [e["data"] for e in events if e["event"] == "verdict"]
    assert [(v["decision"], v["judge_score"]) for v in verdicts] == [("accept", 9.0), ("replace", 3.0)]
    assert await _indexes(page) == ["0", "1"]
    accepted = await page.text_content("li.step[data-index='0'] .body .badge[data-badge='judge']")
    assert accepted == "judge 9.0 ≥ 7"
    rejected = await page.text_content("li.step[data-index='1'] .drafts .badge[data-badge='judge_reject']")
    assert rejected == "judge 3.0 < 7: reject"
    assert await page.text_content("li.step[data-index='1'] .drafts del") == "That makes 8."
    assert await page.get_attribute("li.step[data-index='1']", "data-role") == "lrm"


async def test_likelihood_badges_show_the_statistic_against_the_threshold(
    likelihood_site: Site, page: Any
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"question": "What is 3 + 4?", "policy": "likelihood", "params": {"priming_steps": 0}}
    async with likelihood_site.http.post(
        likelihood_site.url + "/v1/sessions", json=body, headers=auth
    ) as resp:
        session_id = (await resp.json())["session_id"]
    await page.goto(f"{likelihood_site.url}/sessions/{session_id}")
    await page.fill("#token", TOKEN)
    await page.click("#auth button")
    await page.wait_for_selector("#status.finished", timeout=30_000)
    events = await likelihood_site.events(session_id)
    verdicts = [e["data"] for e in events if e["event"] == "verdict"]
    assert [(v["decision"], v["score_stat"]) for v in verdicts] == [("accept", -0.2), ("replace", -3.0)]
    accepted = await page.text_content("li.step[data-index='0'] .body .badge[data-badge='likely']")
    assert accepted == "LRM mean -0.200 ≥ -1"
    rejected = await page.text_content("li.step[data-index='1'] .drafts .badge[data-badge='unlikely']")
    assert rejected == "LRM mean -3.000 < -1: unlikely"
