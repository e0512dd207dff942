#!/usr/bin/env python3
"""shmcast-web in a real browser: Debian's Chromium driven headless by
Selenium (chromium-driver). Starts real producers, the detector and
shmcast-web, then checks: the page loads with no console errors, a live
view's picture changes over two seconds, a stream started after the page
loaded appears, and a detector event appears with its thumbnail. Saves a
screenshot (the test artifact) to target/web-browser.png.

Usage: browser.py BIN_DIR [SCREENSHOT.png]
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

WAIT = 30.0


def wait_for(what, f, timeout=WAIT):
    end = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    bins = sys.argv[1]
    shot = sys.argv[2] if len(sys.argv) > 2 else "target/web-browser.png"
    tmp = tempfile.mkdtemp(prefix="shmcast-web-browser-")
    procs = []
    tag = str(os.getpid())
    names = [f"browser-a-{tag}", f"browser-b-{tag}"]

    # A private segment directory: the page shows this test's streams only.
    env = dict(os.environ, SHMCAST_SHM_DIR=os.path.join(tmp, "shm"))
    os.mkdir(env["SHMCAST_SHM_DIR"])

    def spawn(label, args):
        log = open(os.path.join(tmp, label + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(p)
        return p

    def log_of(label):
        with open(os.path.join(tmp, label + ".log")) as f:
            return f.read()

    driver = None
    try:
        events = os.path.join(tmp, "events.jsonl")
        snaps = os.path.join(tmp, "snaps")
        os.mkdir(snaps)
        spawn("producer-a", [f"{bins}/shmcast-producer", "--name", names[0], "--source", "testsrc", "--width", "640",
                             "--height", "360", "--fps", "30", "--events", "60", "--noise", "2"])
        spawn("web", [f"{bins}/shmcast-web", "--listen", "127.0.0.1:0", "--events", f"{names[0]}={events}",
                      "--snapshots", snaps])
        base = wait_for("shmcast-web to listen",
                        lambda: (re.search(r"listening on (http://[0-9.:]+)/", log_of("web")) or [None, None])[1])
        wait_for("stream a listed", lambda: names[0] in subprocess.run(
            ["curl", "-s", f"{base}/api/streams"], capture_output=True, text=True).stdout)

        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,1400"]:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
        driver = webdriver.Chrome(service=service, options=opts)
        driver.get(base + "/")

        card_a = wait_for("card of stream a", lambda: driver.find_elements(
            By.CSS_SELECTOR, f'.card[data-name="{names[0]}"]'))[0]
        img = card_a.find_element(By.CSS_SELECTOR, "img")
        wait_for("live picture", lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        first = img.screenshot_as_png
        time.sleep(2.0)
        second = img.screenshot_as_png
        assert first != second, "the live view did not change over two seconds"
        print("browser: live view changes", flush=True)

        # A stream started after the page loaded appears.
        spawn("producer-b", [f"{bins}/shmcast-producer", "--name", names[1], "--source", "testsrc", "--width", "320",
                             "--height", "240", "--fps", "15", "--format", "yuyv"])
        wait_for("card of stream b", lambda: driver.find_elements(By.CSS_SELECTOR, f'.card[data-name="{names[1]}"]'))
        print("browser: new stream appears", flush=True)

        # The detector's event appears, with its thumbnail.
        spawn("detect", [f"{bins}/shmcast-detect", "--name", names[0], "--events", events, "--snapshots", snaps])
        thumb = wait_for("an event with its thumbnail", lambda: [
            t for t in driver.find_elements(By.CSS_SELECTOR, "#events tr.event img.thumb")
            if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t)], 90)[0]
        print("browser: event thumbnail", thumb.get_attribute("src"), flush=True)

        time.sleep(0.5)
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        driver.save_screenshot(shot)
        print("browser: screenshot", shot, flush=True)

        logs = driver.get_log("browser")
        errors = [e for e in logs if e.get("level") == "SEVERE"]
        assert not errors, "console errors: " + json.dumps(errors, indent=1)
        print("browser: ok (no console errors)", flush=True)
    except Exception:
        for label in ["web", "producer-a", "producer-b", "detect"]:
            try:
                print(f"--- {label} log ---\n" + log_of(label)[-3000:], file=sys.stderr)
            except OSError:
                pass
        raise
    finally:
        if driver is not None:
            driver.quit()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
