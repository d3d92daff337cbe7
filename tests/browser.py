"""Headless Chromium for the browser tests, started one way for all of them.

tests/prepare.d/chromium.sh installs Debian's chromium and chromium-driver; without them
the tests that use `requires_chromium` skip. Selenium talks to /usr/bin/chromedriver
directly, so nothing is downloaded at run time.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import shutil
from types import ModuleType
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# No sandbox: CI runs as root, where Chromium's sandbox cannot start. The rest keep a
# machine without internet quiet (no update, sync or QUIC probes) and the run fresh.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900")

requires_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (bash tests/prepare.sh installs "
           "them as root)")


@contextlib.contextmanager
def chromium(profile: pathlib.Path, prefs: dict[str, Any] | None = None) -> Iterator[Any]:
    """A selenium driver for a fresh headless Chromium with its profile in `profile`."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if prefs:
        options.add_experimental_option("prefs", prefs)
    with open(os.devnull, "w") as log:
        driver = webdriver.Chrome(options=options,
                                  service=Service(executable_path=CHROMEDRIVER, log_output=log))
        try:
            yield driver
        finally:
            driver.quit()


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(filename: str, module_name: str) -> ModuleType:
    """Import examples/`filename` (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
