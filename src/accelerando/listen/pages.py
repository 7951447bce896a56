"""HTML of the listening-test pages: plain HTML forms with a few lines of inline JavaScript, no external assets.

The forms work without JavaScript (sliders and radio buttons post as ``application/x-www-form-urlencoded``). The
script only shows slider values and, on the MUSHRA page, makes playback switch between stimuli at the same position.
"""

from html import escape

__all__ = ["abx_page", "done_page", "error_page", "index_page", "mushra_page"]

_STYLE = """
body { font-family: sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
.row { display: flex; align-items: center; gap: 1rem; margin: 0.6rem 0; padding: 0.4rem; border: 1px solid #ccc; }
.row label { width: 6rem; font-weight: bold; }
.row input[type=range] { flex: 1; }
.row output { width: 2.5rem; text-align: right; }
button { font-size: 1rem; padding: 0.4rem 1.2rem; }
.progress { color: #555; }
.error { color: #a00; }
"""

# Pause every other player when one starts, and start it where the previous one was (seamless A/B switching).
_SWITCH_JS = """
document.querySelectorAll('audio').forEach(function (a) {
  a.addEventListener('play', function () {
    document.querySelectorAll('audio').forEach(function (b) {
      if (b === a || b.paused) return;
      b.pause();
      if (b.currentTime < a.duration) a.currentTime = b.currentTime;
    });
  });
});
document.querySelectorAll('input[type=range]').forEach(function (r) {
  var out = document.getElementById(r.id + '_out');
  r.addEventListener('input', function () { out.value = r.value; });
});
"""


def _layout(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}{js}</body></html>"
    )


def _audio(src: str, element_id: str) -> str:
    return f'<audio id="{element_id}" controls preload="metadata" src="{escape(src)}"></audio>'


def index_page(title: str, instructions: str, n_mushra: int, n_abx: int) -> str:
    parts = []
    if n_mushra:
        parts.append(f"{n_mushra} MUSHRA page{'s' if n_mushra != 1 else ''}")
    if n_abx:
        parts.append(f"{n_abx} ABX page{'s' if n_abx != 1 else ''}")
    body = (
        f"<h1>{escape(title)}</h1>"
        + (f"<p>{escape(instructions)}</p>" if instructions else "")
        + f"<p>This test has {' and '.join(parts)}. Use headphones in a quiet room and keep the volume fixed.</p>"
        "<p><b>MUSHRA</b>: play the reference and every numbered sound; rate each from 0 (bad) to 100 (excellent) "
        "against the reference. One of the numbered sounds is the reference itself.</p>"
        "<p><b>ABX</b>: play A, B and X; say whether X is A or B.</p>"
        '<form method="post" action="/start"><label>Your name or alias: '
        '<input id="name" name="name" required maxlength="100"></label> '
        '<button id="start" type="submit">Start</button></form>'
    )
    return _layout(title, body)


def mushra_page(title: str, action: str, ref_src: str, slot_srcs: list[str], page: int, pages: int) -> str:
    rows = [f'<div class="row"><label>Reference</label>{_audio(ref_src, "ref")}</div><hr>']
    for k, src in enumerate(slot_srcs):
        rows.append(
            f'<div class="row"><label>Sound {k + 1}</label>{_audio(src, f"audio_{k}")}'
            f'<input type="range" id="score_{k}" name="score_{k}" min="0" max="100" step="1" value="0">'
            f'<output id="score_{k}_out">0</output></div>'
        )
    body = (
        f"<h1>{escape(title)}</h1><p class='progress'>Page {page} of {pages} (MUSHRA)</p>"
        "<p>Rate every sound against the reference: 0–20 bad, 20–40 poor, 40–60 fair, 60–80 good, "
        "80–100 excellent. One sound is the hidden reference and deserves 100.</p>"
        f'<form method="post" action="{escape(action)}">{"".join(rows)}'
        '<button id="submit" type="submit">Submit and continue</button></form>'
    )
    return _layout(title, body, _SWITCH_JS)


def abx_page(title: str, action: str, srcs: dict[str, str], page: int, pages: int) -> str:
    players = "".join(f'<div class="row"><label>{k}</label>{_audio(v, f"audio_{k}")}</div>' for k, v in srcs.items())
    body = (
        f"<h1>{escape(title)}</h1><p class='progress'>Page {page} of {pages} (ABX)</p>"
        "<p>X is either A or B. Which one is it?</p>"
        f'<form method="post" action="{escape(action)}">{players}'
        '<p><label><input type="radio" id="answer_A" name="answer" value="A" required> X is A</label> '
        '<label><input type="radio" id="answer_B" name="answer" value="B"> X is B</label></p>'
        '<button id="submit" type="submit">Submit and continue</button></form>'
    )
    return _layout(title, body, _SWITCH_JS)


def done_page(title: str, name: str) -> str:
    body = f"<h1>{escape(title)}</h1><p id='done'>All done, {escape(name)}. Thank you! Your answers are saved.</p>"
    return _layout(title, body)


def error_page(title: str, message: str) -> str:
    body = f"<h1>{escape(title)}</h1><p class='error' id='error'>{escape(message)}</p><p><a href='/'>Start page</a></p>"
    return _layout(title, body)
