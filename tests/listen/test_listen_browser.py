"""End to end: the real server (the CLI's `listen serve`, in a subprocess) driven by headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accelerando.listen.config import load_config
from accelerando.listen.design import abx_x, mushra_slots
from accelerando.listen.store import AnswerStore

CHROMIUM = os.environ.get("ACCELERANDO_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ACCELERANDO_CHROMEDRIVER", "/usr/bin/chromedriver")
_SERVE = (
    "import argparse, sys; from accelerando.cli.listen import register; p = argparse.ArgumentParser(); "
    "register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(config_path, tmp_path):
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    db = tmp_path / "answers.sqlite"
    argv = ["listen", "serve", "--config", str(config_path), "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, *argv], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not answer within 30 s")
            time.sleep(0.1)
        yield url, db
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        opts.add_argument(flag)
    opts.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_browser_completes_mushra_and_abx(browser, server, config_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, db = server
    cfg = load_config(config_path)
    scores = {"good": 88, "bad": 31, "reference": 100, "anchor_7k": 57, "anchor_3.5k": 12}
    browser.get(url + "/")
    browser.find_element(By.ID, "name").send_keys("selenium")
    browser.find_element(By.ID, "start").click()
    lid = _wait(lambda: "/l/" in browser.current_url and browser.current_url.split("/l/")[1].split("/")[0], "start")
    abx_answers = {}
    for _ in range(10):
        path = browser.current_url.split(f"/l/{lid}/", 1)[1]
        if path.startswith("mushra/"):
            i = int(path.split("/")[1])
            # the audio is served and decodable: the browser knows each player's duration (0.5 s clips)
            durations = _wait(
                lambda: browser.execute_script(
                    "var d = Array.from(document.querySelectorAll('audio')).map(a => a.duration);"
                    "return d.every(x => x > 0) ? d : null;"
                ),
                "audio metadata",
            )
            assert len(durations) == 6 and all(abs(d - 0.5) < 0.05 for d in durations)
            for k, condition in enumerate(mushra_slots(cfg, lid, i)):
                slider = browser.find_element(By.ID, f"score_{k}")
                browser.execute_script(
                    "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                    slider,
                    scores[condition] - 2,
                )
                slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # real key presses move the slider by 2
                assert browser.find_element(By.ID, f"score_{k}_out").text == str(scores[condition])
        else:
            assert path.startswith("abx/")
            i, rep = map(int, path.split("/")[1:3])
            answer = abx_x(cfg, lid, i, rep) if rep == 0 else "AB"[abx_x(cfg, lid, i, rep) == "A"]
            abx_answers[rep] = answer
            browser.find_element(By.ID, f"answer_{answer}").click()
        before = browser.current_url
        browser.find_element(By.ID, "submit").click()
        _wait(lambda b=before: browser.current_url != b or browser.find_elements(By.ID, "done"), "next page")
        if browser.find_elements(By.ID, "done"):
            break
    else:
        pytest.fail("the browser never reached the thank-you page")
    assert "selenium" in browser.find_element(By.ID, "done").text

    store = AnswerStore(Path(db))
    assert store.listeners() == {lid: "selenium"}
    rows = store.mushra_rows()
    assert len(rows) == 10 and all(score == scores[condition] for _, _, condition, score in rows)
    abx = store.abx_rows()
    assert [(r[1], r[2], r[4], r[5]) for r in abx] == [
        ("c1-bad", 0, abx_answers[0], 1),
        ("c1-bad", 1, abx_answers[1], 0),
    ]
