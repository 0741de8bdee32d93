"""The web chat in a real browser: headless Debian chromium driven by Selenium (make test-interop).

Starts `aethermind serve` as a program on the tiny overfit model (it thinks, then answers),
types a message, and checks the streamed answer and the foldable thinking block. The
screenshot goes to tmp_path, or to $AETHERMIND_SCREENSHOT (how docs/web_chat.png is made).
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


def _ask(driver, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) > before)
    reply = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
    wait.until(lambda _: reply.get_attribute("data-done") == "1")
    return reply


def test_web_chat_streams_an_answer_with_a_thinking_block(browser, server_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "model").text.startswith("forge1_"))
    temperature = browser.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("0")
    assert browser.find_element(By.ID, "think-toggle").is_selected()

    reply = _ask(browser, "What is 2+2?")
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

    browser.find_element(By.ID, "think-toggle").click()  # thinking off: no think block
    reply = _ask(browser, "Say hello in Japanese")
    assert not reply.find_element(By.CSS_SELECTOR, "details.thinking").is_displayed()
    assert reply.find_element(By.CLASS_NAME, "answer").text == "こんにちは 😀 世界"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 2  # the new chat only
