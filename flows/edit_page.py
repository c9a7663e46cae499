"""The eCLIPsed edit page: move alpha and watch the edit (the paper's sequential-editing app).

    make edit-page                                  # python -m flows.edit_page --port 8600
    make edit-page ROWS=final,mouth_open PORT=8601  # only these rows, on another port

One slider per learned direction (a row of the eclipsed table, `${paths.data}/eclipsed/<row>/`),
labelled with its prompt, the face part it edits and its alpha range. The picture is the seed's
face with every direction applied one after the other with its slider's alpha (sequential
editing), redrawn a moment after a slider stops moving; the unedited face stays beside it.

    GET /                                 the page (no external scripts or styles: works offline)
    GET /edit?seed=3&alpha.<row>=1.5      the edited picture as PNG (a row left out: alpha 0)
    GET /health                           "ok" and the rows, once the generator is loaded

A seed or alpha that is no number, an alpha outside its row's range, or a row that is not loaded
is answered 422 with a one-line `detail`. A row without trained directions, or a port already in
use, stops the command before the server starts: one line, exit 2.
"""

from __future__ import annotations

import errno
import html
import io
import math
import socket
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from flows.entry import run_flow_main
from tasks.core.cli import OneLineParser
from tasks.core.errors import UserError
from tasks.core.params import load_params

# A row's trained directions, where its stage writes them (tasks/eclipsed/models.py): checked
# here, before the generator and its libraries load, so a wrong row costs a second, not ten.
DIRECTIONS_FILE = "directions.safetensors"
MAX_SEED = 2**31 - 1
SLIDER_STEPS = 100      # positions per slider between the ends of a row's alpha range
CACHE_SIZE = 64         # rendered pictures kept: moving back to a position answers at once


def directions_folder(params, row: str) -> Path:
    return Path(params.paths.data) / "eclipsed" / row


def trained_rows(params) -> list[str]:
    """Every row whose directions are trained, in name order (what the page shows by default)."""
    root = Path(params.paths.data) / "eclipsed"
    return sorted(p.parent.name for p in root.glob(f"*/{DIRECTIONS_FILE}")) if root.is_dir() else []


def check_rows(params, rows: list[str]) -> None:
    for row in rows:
        path = directions_folder(params, row) / DIRECTIONS_FILE
        if not path.is_file():
            raise UserError(f"--rows {row}: no trained directions ({path} is missing; run: dvc repro eclipsed@{row})")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is one line before anything loads."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart right after a stop is fine
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: something already listens on {host}:{port}") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None
    sock.listen(64)
    return sock


class RowSlider:
    """What the page needs of one loaded row: its label and the alphas it takes. A row's alpha
    range is the one it trained on, which may leave out 0 (LELSD draws |alpha| >= alpha_min);
    the slider reaches 0 anyway, so every edit can be turned off."""

    def __init__(self, name: str, meta: Mapping[str, Any]):   # the row's directions.json
        self.name = name
        self.prompt = str(meta.get("prompt", name))
        self.part = meta.get("part")
        self.trained = tuple(float(v) for v in meta["alpha_range"])
        self.low, self.high = min(self.trained[0], 0.0), max(self.trained[1], 0.0)

    @property
    def range_text(self) -> str:
        trained = f"[{self.trained[0]:g}, {self.trained[1]:g}]"
        return trained if (self.low, self.high) == self.trained else f"{trained} and 0 (no edit)"

    @property
    def step(self) -> float:
        return float(f"{(self.high - self.low) / SLIDER_STEPS:.6g}")

    def parse(self, text: str) -> float:
        key = f"alpha.{self.name}"
        try:
            alpha = float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: not a number") from None
        if not math.isfinite(alpha):
            raise ValueError(f"{key}={text}: not a finite number")
        if not self.low <= alpha <= self.high:
            raise ValueError(f"{key}={text}: outside the row's alpha range, {self.range_text}")
        return alpha


class EditService:
    """The editor behind a lock (one rendering at a time: the CPU cores are shared by the
    requests) with the latest pictures cached as PNG."""

    def __init__(self, editor):   # tasks.eclipsed.editor.Editor: .rows (row -> directions.json), .render
        self.editor = editor
        self.sliders = [RowSlider(name, meta) for name, meta in editor.rows.items()]
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()

    def parse(self, query: Mapping[str, str]) -> tuple[int, dict[str, float]]:
        """(seed, alphas) of a query string; ValueError with a one-line message when it is wrong."""
        by_name = {s.name: s for s in self.sliders}
        text = query.get("seed", "0")
        try:
            seed = int(text)
        except ValueError:
            raise ValueError(f"seed={text!r}: not a whole number") from None
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed={seed}: outside [0, {MAX_SEED}]")
        alphas = {s.name: 0.0 for s in self.sliders}
        for key, value in query.items():
            if key == "seed":
                continue
            row = key[len("alpha."):] if key.startswith("alpha.") else None
            if row not in by_name:
                raise ValueError(f"{key}: not a loaded row's alpha (loaded: "
                                 f"{', '.join('alpha.' + s.name for s in self.sliders)})")
            alphas[row] = by_name[row].parse(value)
        return seed, alphas

    def png(self, seed: int, alphas: dict[str, float]) -> bytes:
        import numpy as np
        from PIL import Image

        key = (seed, tuple(sorted(alphas.items())))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            picture = np.asarray(self.editor.render(seed, dict(alphas)))
            buffer = io.BytesIO()
            Image.fromarray(picture.astype(np.uint8, copy=False), "RGB").save(buffer, format="PNG")
            self._cache[key] = buffer.getvalue()
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return self._cache[key]


def page_html(sliders: list[RowSlider], seed: int) -> str:
    controls = []
    for s in sliders:
        part = f" &middot; edits the {html.escape(str(s.part))}" if s.part else ""
        controls.append(
            f'<div class="row"><label for="alpha-{html.escape(s.name)}"><b>{html.escape(s.prompt)}</b>'
            f'<span class="meta">{html.escape(s.name)}{part} &middot; &alpha; in {s.range_text}</span></label>'
            f'<input type="range" id="alpha-{html.escape(s.name)}" name="alpha.{html.escape(s.name)}" '
            f'min="{s.low:g}" max="{s.high:g}" step="{s.step:g}" value="0">'
            f'<output for="alpha-{html.escape(s.name)}">0</output></div>')
    filled = {"seed": str(seed), "max_seed": str(MAX_SEED), "controls": "\n".join(controls),
              "rows": html.escape(", ".join(s.name for s in sliders))}
    page = PAGE
    for key, value in filled.items():
        page = page.replace("{{" + key + "}}", value)
    return page


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eCLIPsed: edit page</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
 .layout { display: flex; gap: 2rem; align-items: flex-start; flex-wrap: wrap; }
 .pictures { display: flex; gap: 1.5rem; }
 figure { margin: 0; text-align: center; }
 img { width: 256px; height: 256px; image-rendering: pixelated; background: #eee; border: 1px solid #ccc; }
 .controls { min-width: 360px; }
 .row { margin: 0 0 1rem; }
 .row label { display: block; }
 .meta { display: block; color: #666; font-size: 0.85em; }
 .row input[type=range] { width: 260px; vertical-align: middle; }
 output { display: inline-block; width: 4em; text-align: right; font-variant-numeric: tabular-nums; }
 #message { color: #b00020; min-height: 1.2em; }
 img.stale { opacity: 0.4; }
</style></head>
<body>
<h1>eCLIPsed: edit page</h1>
<p>Directions applied one after the other, each with its &alpha; (rows: {{rows}}).</p>
<div class="layout">
 <div class="controls">
  <div class="row"><label for="seed"><b>seed</b><span class="meta">the face to edit</span></label>
   <input type="number" id="seed" name="seed" min="0" max="{{max_seed}}" step="1" value="{{seed}}"></div>
  {{controls}}
  <p id="message" role="alert"></p>
 </div>
 <div class="pictures">
  <figure><img id="original" alt="the unedited face"><figcaption>unedited</figcaption></figure>
  <figure><img id="edited" alt="the edited face"><figcaption>edited</figcaption></figure>
 </div>
</div>
<script>
"use strict";
const sliders = [...document.querySelectorAll("input[type=range]")];
const seed = document.getElementById("seed");
const message = document.getElementById("message");
const edited = document.getElementById("edited");
const original = document.getElementById("original");

function query(withAlphas) {
  const q = new URLSearchParams({seed: seed.value});
  if (withAlphas) for (const s of sliders) q.set(s.name, s.value);
  return q.toString();
}

// The picture is fetched, not linked: a refused request (422) leaves the last picture in place,
// dimmed, with the server's reason beside it. Only the newest request of a picture is shown;
// data-query names the picture on show once it has loaded (what a test waits for).
async function show(img, q) {
  if (img.dataset.pending === q) return;
  img.dataset.pending = q;
  let response = null;
  try { response = await fetch("edit?" + q); } catch (err) { /* the server is gone: said below */ }
  if (img.dataset.pending !== q) return;
  if (!response || !response.ok) {
    const body = response ? await response.json().catch(() => ({detail: response.statusText}))
                          : {detail: "the edit page's server does not answer"};
    if (img.dataset.pending !== q) return;
    img.dataset.pending = "";
    img.classList.add("stale");
    message.textContent = body.detail;
    return;
  }
  const blob = await response.blob();
  if (img.dataset.pending !== q) return;
  const previous = img.src;
  img.onload = () => {
    if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
    img.classList.remove("stale");
    img.dataset.query = q;
  };
  img.src = URL.createObjectURL(blob);
}

function refresh() {
  message.textContent = "";
  show(original, query(false));
  show(edited, query(true));
}

let timer = null;
function later() {   // a slider sends many input events while it moves: draw once it pauses
  clearTimeout(timer);
  timer = setTimeout(refresh, 120);
}
for (const s of sliders) {
  s.addEventListener("input", () => { s.nextElementSibling.value = s.value; later(); });
}
seed.addEventListener("input", later);
refresh();
</script>
</body></html>
"""


def build_app(service: EditService, seed: int = 0) -> FastAPI:
    app = FastAPI(title="eCLIPsed edit page", docs_url=None, redoc_url=None, openapi_url=None)
    page = page_html(service.sliders, seed)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/favicon.ico")
    def favicon() -> Response:   # none: answered, so the browser's console stays clean
        return Response(status_code=204)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "rows": [s.name for s in service.sliders]}

    @app.get("/edit")
    def edit(request: Request):   # sync: FastAPI runs it in a worker thread, the event loop stays free
        try:
            seed_value, alphas = service.parse(request.query_params)
        except ValueError as err:
            return JSONResponse({"detail": str(err)}, status_code=422)
        return Response(service.png(seed_value, alphas), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    return app


def main(argv: Optional[list[str]] = None) -> None:
    parser = OneLineParser(prog="python -m flows.edit_page",
                           description="Serve the eCLIPsed edit page: a slider per learned direction.")
    parser.add_argument("--rows", default="",
                        help="comma-separated rows of the eclipsed table (default: every row with trained directions)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--seed", type=int, default=0, help="the face the page opens on")
    args = parser.parse_args(argv)
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed {args.seed}: outside [0, {MAX_SEED}]")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a port (1 to 65535)")
    params = load_params(args.params)
    rows = list(dict.fromkeys(r.strip() for r in args.rows.split(",") if r.strip())) or trained_rows(params)
    if not rows:
        raise UserError(f"no row has trained directions under {Path(params.paths.data) / 'eclipsed'} "
                        f"(run: dvc repro eclipsed) and --rows names none")
    check_rows(params, rows)
    sock = bind(args.host, args.port)

    import uvicorn

    from tasks.eclipsed.editor import load_editor

    service = EditService(load_editor(params, rows))
    app = build_app(service, args.seed)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"eCLIPsed edit page: http://{host}:{args.port}/  (rows: {', '.join(rows)}; Ctrl-C stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


if __name__ == "__main__":
    run_flow_main(main)
