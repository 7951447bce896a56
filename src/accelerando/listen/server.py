"""The listening-test web app: a FastAPI app that serves the pages and audio and stores each answer.

Routes (``{lid}`` is the listener id, a random token made on the start page)::

    GET  /                                   start page: instructions and a name field
    POST /start                              register a listener, go to their first page
    GET  /l/{lid}                            go to the listener's next unanswered page (or the thank-you page)
    GET  /l/{lid}/mushra/{i}                 MUSHRA trial i: open reference plus shuffled sliders
    POST /l/{lid}/mushra/{i}                 score_0 ... score_{N-1} in [0, 100]
    GET  /l/{lid}/abx/{i}/{r}                repeat r of ABX comparison i
    POST /l/{lid}/abx/{i}/{r}                answer = A | B
    GET  /audio/{lid}/mushra/{i}/{slot}      slot = ref | 0 ... N-1
    GET  /audio/{lid}/abx/{i}/{r}/{which}    which = A | B | X

Audio URLs name a slot, never a condition, so the page does not give away what is behind a slider or X. Each
answer is committed to SQLite before the redirect to the next page is sent (see :mod:`.store`).
"""

from pathlib import Path
from urllib.parse import parse_qs

from .anchors import ensure_anchors
from .config import ANCHORS, HIDDEN_REFERENCE, ListenConfig
from .design import abx_x, mushra_slots, steps
from .pages import abx_page, done_page, error_page, index_page, mushra_page
from .store import AnswerStore

__all__ = ["create_app"]

_MAX_FORM_BYTES = 64 * 1024


def create_app(config: ListenConfig, db_path: str | Path | None = None):
    """Build the app for ``config``, storing answers in ``db_path`` (default: next to the test file).

    Makes the MUSHRA anchors (or finds them cached) before returning, so a bad reference fails at start-up.
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool

    store = AnswerStore(db_path if db_path is not None else config.default_db_path())
    anchors = ensure_anchors(config)
    n_abx = sum(c.repeats for c in config.abx)
    app = FastAPI(title=config.title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config, app.state.store = config, store

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

    def listener_name(lid: str) -> str:
        name = store.listener_name(lid)
        if name is None:
            raise HTTPException(404, f"unknown listener {lid!r}; start at /")
        return name

    def page_number(lid: str, kind: str, index: int, repeat: int = 0) -> tuple[int, int]:
        order = steps(config, lid)
        pos = next(k for k, s in enumerate(order) if (s.kind, s.index, s.repeat) == (kind, index, repeat))
        return pos + 1, len(order)

    def check_mushra(i: int) -> None:
        if not 0 <= i < len(config.mushra):
            raise HTTPException(404, f"no MUSHRA trial {i}")

    def check_abx(i: int, r: int) -> None:
        if not (0 <= i < len(config.abx) and 0 <= r < config.abx[i].repeats):
            raise HTTPException(404, f"no ABX trial {i}/{r}")

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def audio(path: Path) -> FileResponse:
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/", response_class=HTMLResponse)
    def index():
        return html(index_page(config.title, config.instructions, len(config.mushra), n_abx))

    @app.post("/start")
    async def start(request: Request):
        name = " ".join(((await form(request)).get("name") or "").split())[:100]
        if not name:
            return html(error_page(config.title, "Please enter a name or alias."), 400)
        lid = await run_in_threadpool(store.add_listener, name)
        return RedirectResponse(f"/l/{lid}", status_code=303)

    @app.get("/l/{lid}")
    def next_page(lid: str):
        name = listener_name(lid)
        mushra_done, abx_done = store.done(lid)
        for step in steps(config, lid):
            if step.kind == "mushra" and config.mushra[step.index].name not in mushra_done:
                return RedirectResponse(f"/l/{lid}/{step.url_path}", status_code=303)
            if step.kind == "abx" and (config.abx[step.index].name, step.repeat) not in abx_done:
                return RedirectResponse(f"/l/{lid}/{step.url_path}", status_code=303)
        return html(done_page(config.title, name))

    @app.get("/l/{lid}/mushra/{i}")
    def mushra_get(lid: str, i: int):
        listener_name(lid)
        check_mushra(i)
        n = len(mushra_slots(config, lid, i))
        srcs = [f"/audio/{lid}/mushra/{i}/{k}" for k in range(n)]
        page, pages = page_number(lid, "mushra", i)
        return html(
            mushra_page(config.title, f"/l/{lid}/mushra/{i}", f"/audio/{lid}/mushra/{i}/ref", srcs, page, pages)
        )

    @app.post("/l/{lid}/mushra/{i}")
    async def mushra_post(lid: str, i: int, request: Request):
        listener_name(lid)
        check_mushra(i)
        fields = await form(request)
        slots = mushra_slots(config, lid, i)
        scores: dict[str, float] = {}
        for k, condition in enumerate(slots):
            raw = fields.get(f"score_{k}", "")
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not 0.0 <= value <= 100.0:
                msg = f"Sound {k + 1}: score must be a number from 0 to 100, got {raw!r}."
                return html(error_page(config.title, msg), 400)
            scores[condition] = value
        await run_in_threadpool(store.save_mushra, lid, config.mushra[i].name, scores)
        return RedirectResponse(f"/l/{lid}", status_code=303)

    @app.get("/l/{lid}/abx/{i}/{r}")
    def abx_get(lid: str, i: int, r: int):
        listener_name(lid)
        check_abx(i, r)
        srcs = {w: f"/audio/{lid}/abx/{i}/{r}/{w}" for w in ("A", "B", "X")}
        page, pages = page_number(lid, "abx", i, r)
        return html(abx_page(config.title, f"/l/{lid}/abx/{i}/{r}", srcs, page, pages))

    @app.post("/l/{lid}/abx/{i}/{r}")
    async def abx_post(lid: str, i: int, r: int, request: Request):
        listener_name(lid)
        check_abx(i, r)
        answer = (await form(request)).get("answer")
        if answer not in ("A", "B"):
            return html(error_page(config.title, f"Answer must be A or B, got {answer!r}."), 400)
        await run_in_threadpool(store.save_abx, lid, config.abx[i].name, r, abx_x(config, lid, i, r), answer)
        return RedirectResponse(f"/l/{lid}", status_code=303)

    @app.get("/audio/{lid}/mushra/{i}/{slot}")
    def mushra_audio(lid: str, i: int, slot: str):
        listener_name(lid)
        check_mushra(i)
        trial = config.mushra[i]
        if slot == "ref":
            return audio(trial.reference)
        slots = mushra_slots(config, lid, i)
        if not slot.isdigit() or int(slot) >= len(slots):
            raise HTTPException(404, f"no slot {slot!r}")
        condition = slots[int(slot)]
        if condition == HIDDEN_REFERENCE:
            return audio(trial.reference)
        if condition in ANCHORS:
            return audio(anchors[(trial.name, condition)])
        return audio(trial.conditions[condition])

    @app.get("/audio/{lid}/abx/{i}/{r}/{which}")
    def abx_audio(lid: str, i: int, r: int, which: str):
        listener_name(lid)
        check_abx(i, r)
        if which not in ("A", "B", "X"):
            raise HTTPException(404, f"no ABX stimulus {which!r}")
        if which == "X":
            which = abx_x(config, lid, i, r)
        comparison = config.abx[i]
        return audio(comparison.a if which == "A" else comparison.b)

    return app
