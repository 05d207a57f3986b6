"""A real browser for tests: headless Chromium driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` makes Chromium read protocol messages (JSON, each ended by a NUL)
on file descriptor 3 and write them on 4, so the standard library is enough: no websocket
client, no Selenium. `open_page(path)` loads a file and returns what the page did: its DOM
(evaluated in the page), every JavaScript exception, console error and browser log error, and
every request other than the file itself (a self-contained page makes none).

Where no Chromium is installed, `find_chromium()` is None and the tests skip, unless
GRADER_REQUIRE_BROWSER is set (CI sets it after installing Debian's `chromium`), where they fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageResult:
    values: dict                                   # what each expression given to open_page returned
    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)   # every URL requested but the page's own
    screenshot: bytes | None = None

    @property
    def errors(self) -> list[str]:
        return self.exceptions + self.console_errors + self.log_errors


class _Pipe:
    def __init__(self, binary: str, profile: str, window: tuple[int, int]):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def plumbing():   # in the child: the protocol's two descriptors, 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}",
                                         f"--window-size={window[0]},{window[1]}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=plumbing, pass_fds=(3, 4))   # kept after plumbing runs
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            self.events.extend(self._read(deadline))

    def _read(self, deadline: float) -> list[dict]:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_chrome], [], [], left)
            if ready:
                chunk = os.read(self.from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the protocol pipe")
                self.buffer += chunk
        *messages, self.buffer = self.buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def close(self) -> None:
        try:
            os.write(self.to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self.to_chrome)
            os.close(self.from_chrome)


def open_page(path: Path, expressions: dict[str, str], window: tuple[int, int] = (1280, 900),
              screenshot: bool = False, binary: str | None = None) -> PageResult:
    """Load `path` in headless Chromium, wait for its load event and a moment more, evaluate
    each of `expressions` (JavaScript, by name) in the page, and report what happened."""
    binary = binary or find_chromium()
    if binary is None:
        raise RuntimeError("no Chromium here, and GRADER_REQUIRE_BROWSER is set: apt-get install chromium")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        pipe = _Pipe(binary, profile, window)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired")
            time.sleep(0.5)   # anything a script would do after load
            values = {}
            for name, expression in expressions.items():
                result = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=session)
                if "exceptionDetails" in result:
                    raise RuntimeError(f"{name}: {result['exceptionDetails'].get('text')}")
                values[name] = result["result"].get("value")
            page = PageResult(values=values)
            if screenshot:
                import base64
                shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                 session=session)
                page.screenshot = base64.b64decode(shot["data"])
            pipe.call("Runtime.evaluate", {"expression": "1"}, session=session)   # flush pending events
            for event in pipe.events:
                method, params = event.get("method"), event.get("params", {})
                if method == "Runtime.exceptionThrown":
                    page.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
                elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    page.console_errors.append(json.dumps(params.get("args", []))[:500])
                elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    page.log_errors.append(params["entry"].get("text", "")[:500])
                elif method == "Network.requestWillBeSent":
                    requested = params.get("request", {}).get("url", "")
                    if requested != url:
                        page.requests.append(requested)
            return page
        finally:
            pipe.close()
