"""examples/chat.py in a real headless Chromium: two windows on two worker processes chat
through server.channels (Chromium also negotiates permessage-deflate)."""
from __future__ import annotations

import pathlib
from typing import Any, Iterator

import pytest

from tests.browser import chromium, load_example, requires_chromium

pytestmark = [
    requires_chromium,
    pytest.mark.timeout(120),
]


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def test_two_browser_windows_chat_across_two_workers(browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = load_example("chat.py", "chat_example").build_server(port=0)
    server.workers = 2
    server.start()
    try:
        wait = WebDriverWait(browser, 20)

        def open_window(name: str) -> tuple[str, str]:
            browser.get(f"{server.url}/?name={name}#garden")
            wait.until(lambda d: "served by worker" in d.find_element(By.ID, "where").text)
            pid = browser.find_element(By.ID, "where").text.rsplit(" ", 1)[1]
            return browser.current_window_handle, pid

        first, first_pid = open_window("ann")
        for attempt in range(40):
            browser.switch_to.new_window("tab")
            second, second_pid = open_window(f"bob{attempt}")
            if second_pid != first_pid:
                break
            browser.close()
            browser.switch_to.window(first)
        assert second_pid != first_pid, "every window landed on the same worker"

        browser.find_element(By.ID, "text").send_keys("hello from the second window")
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        browser.switch_to.window(first)
        wait.until(lambda d: f"(worker {second_pid}): hello from the second window"
                   in d.find_element(By.ID, "log").text)
        assert first_pid in browser.find_element(By.ID, "where").text
    finally:
        server.stop(timeout=3)
