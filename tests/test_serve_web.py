"""The web chat in a real browser: headless Debian chromium driven by Selenium (make test-interop).

Starts `aethermind serve` as a program on the tiny overfit model (it chooses to think on "What
is 2+2?" and not on "Say hello in Japanese"; its context is 128 tokens), types messages, and
checks the streamed answer, the foldable thinking block, the thinking menu (by default no
think flag is sent, as `aethermind chat` does), errors (in view, with the way out), and a
conversation past the context (the oldest turns dropped, as in `aethermind chat`). The
screenshot goes to tmp_path, or to $AETHERMIND_SCREENSHOT.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1000,720")


@pytest.fixture(scope="module")
def server_url(overfit_final):
    proc = subprocess.Popen([sys.executable, "-m", "aethermind.cli", "serve", "--model",
                             str(overfit_final), "--port", "0", "--device", "cpu"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"on (http://\S+) ", line)
    assert m, f"server did not start: {line}{proc.stderr.read() if proc.poll() else ''}"
    yield m.group(1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} / {DRIVER} missing: `make test-interop` installs them")
        pytest.skip("needs Debian's chromium and chromium-driver (make test-interop)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Records each request body the page sends, so a test sees what the page asked for.
RECORD_REQUESTS = """
window.sent = [];
const original = window.fetch;
window.fetch = (url, options = {}) => {
  if (options.body) window.sent.push(JSON.parse(options.body));
  return original(url, options);
};
"""
IN_VIEW = """
const box = document.getElementById("scroller").getBoundingClientRect();
const r = arguments[0].getBoundingClientRect();
return r.height > 0 && r.top >= box.top && r.bottom <= box.bottom + 1;
"""


def _open(driver, url: str) -> None:
    """The page, loaded, at temperature 0, recording requests."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "model").text.startswith("forge1_"))
    temperature = driver.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("0")
    driver.execute_script(RECORD_REQUESTS)


def _think_mode(driver, value: str | None = None) -> str:
    """The thinking menu's value, after selecting `value` if given."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    menu = Select(driver.find_element(By.ID, "think-mode"))
    if value is not None:
        menu.select_by_value(value)
    return menu.first_selected_option.get_attribute("value")


def _ask(driver, text: str, *, paste: bool = False):
    """Sends `text` (typed, or pasted at once when long) and waits for the whole reply."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    box = driver.find_element(By.ID, "input")
    if paste:
        driver.execute_script("arguments[0].value = arguments[1]", box, text)
    else:
        box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) > before)
    reply = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
    wait.until(lambda _: reply.get_attribute("data-done") == "1")
    return reply


def test_web_chat_streams_an_answer_with_a_thinking_block(browser, server_url, tmp_path):
    from selenium.webdriver.common.by import By

    _open(browser, server_url)
    assert _think_mode(browser) == "auto"  # as `aethermind chat`: the model chooses

    reply = _ask(browser, "What is 2+2?")
    assert "chat_template_kwargs" not in browser.execute_script("return window.sent")[-1]
    assert reply.find_element(By.CLASS_NAME, "answer").text == "The answer is 4."
    assert int(reply.get_attribute("data-chunks")) > 3  # it arrived in pieces: streamed
    details = reply.find_element(By.CSS_SELECTOR, "details.thinking")
    assert details.is_displayed() and details.get_attribute("open") is None  # folded
    details.find_element(By.TAG_NAME, "summary").click()
    assert details.get_attribute("open") is not None
    assert reply.find_element(By.CLASS_NAME, "thinking-text").text == "2 plus 2 makes 4."
    shot = Path(os.environ.get("AETHERMIND_SCREENSHOT") or tmp_path / "web_chat.png")
    assert browser.save_screenshot(str(tmp_path / "web_chat.png"))
    assert (tmp_path / "web_chat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if shot != tmp_path / "web_chat.png":
        shutil.copyfile(tmp_path / "web_chat.png", shot)

    browser.find_element(By.ID, "new-chat").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []

    reply = _ask(browser, "Say hello in Japanese")  # the model chooses not to think here
    assert not reply.find_element(By.CSS_SELECTOR, "details.thinking").is_displayed()
    assert reply.find_element(By.CLASS_NAME, "answer").text == "こんにちは 😀 世界"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 2  # the new chat only


def test_thinking_menu_forces_thinking_on_or_off(browser, server_url):
    from selenium.webdriver.common.by import By

    _open(browser, server_url)
    _think_mode(browser, "off")
    reply = _ask(browser, "What is 2+2?")  # would think if the model chose
    sent = browser.execute_script("return window.sent")[-1]
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert not reply.find_element(By.CSS_SELECTOR, "details.thinking").is_displayed()
    _think_mode(browser, "on")
    _ask(browser, "Say hello in Japanese")
    sent = browser.execute_script("return window.sent")[-1]
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}


def test_errors_show_in_view_with_the_way_out_and_leave_the_chat_usable(browser, server_url):
    from selenium.webdriver.common.by import By

    browser.set_window_size(420, 720)  # a phone's width: the explanation takes a few lines
    _open(browser, server_url)
    too_long = "word " * 400  # far over the model's 128-token context, and taller than the page
    reply = _ask(browser, too_long, paste=True)
    error = reply.find_element(By.CLASS_NAME, "error")
    assert "send a shorter one" in error.text
    assert reply.find_elements(By.CLASS_NAME, "answer") == []  # no "…" left above the error
    assert browser.execute_script(IN_VIEW, error)
    # The failed message stays out of the context: the next one is answered.
    reply = _ask(browser, "What is 2+2?")
    assert reply.find_element(By.CLASS_NAME, "answer").text == "The answer is 4."

    # In a conversation too: dropping every earlier turn cannot make it fit. Those turns come
    # back for the next message, which sees the first exchange (no turn was dropped for it).
    reply = _ask(browser, too_long, paste=True)
    error = reply.find_element(By.CLASS_NAME, "error")
    assert "send a shorter one" in error.text and browser.execute_script(IN_VIEW, error)
    assert reply.find_elements(By.CLASS_NAME, "answer") == []
    reply = _ask(browser, "Say hello in Japanese")
    assert reply.find_elements(By.CLASS_NAME, "error") == []
    assert len(browser.execute_script("return window.sent")[-1]["messages"]) == 3
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.dropped, .note") == []


def test_a_long_conversation_drops_the_oldest_turns_and_goes_on(browser, server_url):
    from selenium.webdriver.common.by import By

    _open(browser, server_url)
    for turn in range(12):  # the 128-token context holds about five of these turns
        reply = _ask(browser, "What is 2+2?")
        assert reply.find_elements(By.CLASS_NAME, "error") == [], f"turn {turn + 1}"
    sent = browser.execute_script("return window.sent")
    chat = [body for body in sent if "messages" in body]
    assert len(chat[-1]["messages"]) < 2 * 12 - 1  # the last request left old turns out
    assert chat[-1]["messages"][-1] == {"role": "user", "content": "What is 2+2?"}
    note = reply.find_element(By.CLASS_NAME, "note")
    assert "oldest" in note.text and browser.execute_script(IN_VIEW, note)
    dropped = browser.find_elements(By.CSS_SELECTOR, ".msg.dropped")
    assert dropped and dropped[0] == browser.find_elements(By.CSS_SELECTOR, ".msg")[0]
