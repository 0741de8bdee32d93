"""What bench/bad_inputs.py needs to probe a running `aethermind serve`: raw HTTP and a browser.

Raw HTTP with the standard library, because what a hostile client sends (a wrong Host, a
text/plain body, a NaN literal, a lone surrogate escape) is exactly what an SDK would not let
through. `Server` runs the real command as a program, its log in a file, so a case can read
what the server printed while it ran (a traceback there counts even when the client got a
proper reply). `web_chat_turns` drives the web page in headless Debian chromium (Selenium,
the `interop` extra), as tests/test_serve_web.py does. Not a case list: bad_inputs.py has those.
Usage: `with Server(cmd, log) as srv: status, text = srv.post(body)`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"


class Server:
    """`aethermind serve` as a subprocess on a free port; `log_since()` reads its new output."""

    def __init__(self, cmd: list[str], log: Path, env: dict, cwd: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(cmd + ["--port", "0"], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=self.handle)
        line = self.proc.stdout.readline().decode("utf-8", "replace")
        m = re.search(r"on (http://\S+) ", line)
        if not m:
            self.close()
            raise RuntimeError(f"the server did not start: {line}{log.read_text()[-500:]}")
        self.url = m.group(1)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.seen = 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()

    def log_since(self) -> str:
        """What the server wrote since the last call (its tracebacks, warnings)."""
        data = self.log.read_bytes()
        new, self.seen = data[self.seen:], len(data)
        return new.decode("utf-8", "replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, timeout: float = 120) -> tuple[int, str]:
        """(status, body text); a str body goes as UTF-8 with surrogates passed through."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            if "Host" in hdrs:
                conn.putrequest(method, path, skip_host=True)
                for k, v in hdrs.items():
                    conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            else:
                conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def post(self, body: object, headers: dict | None = None, timeout: float = 120
             ) -> tuple[int, str]:
        """POST a chat completion; a dict is JSON (NaN allowed), a str or bytes goes as is."""
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.request("POST", CHAT_PATH, data, headers, timeout)

    def stream_in_thread(self, body: dict) -> tuple[threading.Thread, dict]:
        """Start a streamed completion; the dict gets "events", "error", "done" as it runs."""
        state: dict = {"events": 0, "error": None, "done": False, "status": None}

        def read() -> None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                conn.request("POST", CHAT_PATH, json.dumps({**body, "stream": True}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                state["status"] = resp.status
                for raw in resp:
                    line = raw.decode("utf-8", "replace").strip()
                    if line == "data: [DONE]":
                        state["done"] = True
                    elif line.startswith("data:"):
                        state["events"] += 1
                        chunk = json.loads(line[5:])
                        if "error" in chunk:
                            state["error"] = chunk["error"].get("message")
            except (OSError, http.client.HTTPException, ValueError) as err:
                state["error"] = f"connection: {err!r}"
            finally:
                conn.close()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread, state

    def health_latency(self, stop: threading.Event, out: list[float]) -> threading.Thread:
        """Polls GET /health until `stop`; appends each round trip's seconds to `out`."""
        def poll() -> None:
            while not stop.is_set():
                t0 = time.time()
                with contextlib.suppress(OSError):
                    self.request("GET", "/health", timeout=120)
                out.append(time.time() - t0)
                time.sleep(0.1)
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        return thread


def web_chat_turns(url: str, messages: list[str], profile: Path) -> dict:
    """Send `messages` one by one in the web page (temperature 0); what the page showed.

    Returns {"turns": answered replies, "errors": [error texts], "notes": [dropped-turn
    notes], "sent": [message counts of each request]}; raises RuntimeError when no browser.
    """
    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as err:
        raise RuntimeError("needs selenium (pip install -e '.[interop]')") from err
    if not (chromium.exists() and driver_path.exists()):
        raise RuntimeError("needs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "model").text)
        box = driver.find_element(By.ID, "temperature")
        box.clear()
        box.send_keys("0")
        driver.execute_script("""window.sent = []; const f = window.fetch;
            window.fetch = (u, o = {}) => { if (o.body) window.sent.push(JSON.parse(o.body));
                                            return f(u, o); };""")
        for text in messages:
            before = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
            field = driver.find_element(By.ID, "input")
            driver.execute_script("arguments[0].value = arguments[1]", field, text)
            field.send_keys(Keys.ENTER)
            wait = WebDriverWait(driver, 600)
            wait.until(lambda d, n=before: len(
                d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) > n)
            reply = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
            wait.until(lambda _, r=reply: r.get_attribute("data-done") == "1")
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg .error")]
        notes = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg .note")]
        sent = [len(b.get("messages", [])) for b in driver.execute_script("return window.sent")]
        return {"turns": len(messages) - len(errors), "errors": errors, "notes": notes,
                "sent": sent}
    finally:
        driver.quit()
