"""The example upload page driven by a real headless Chromium (through chromedriver).

tests/prepare.d/chromium.sh installs Debian's chromium and chromium-driver; without
them this test skips. Selenium talks to /usr/bin/chromedriver directly, so nothing is
downloaded at run time.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any, Iterator

import pytest
import requests

from tests.browser import chromium, load_example, requires_chromium

pytestmark = [
    requires_chromium,
    pytest.mark.timeout(120),
]


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def test_upload_through_the_example_page(browser: Any, tmp_path: pathlib.Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    storage = tmp_path / "storage"
    server = load_example("site_server.py", "site_server").build_server(storage, port=0)
    server.start()
    try:
        content = os.urandom(700_000)
        upload = tmp_path / "holiday photo.bin"
        upload.write_bytes(content)
        expected = hashlib.sha256(content).hexdigest()

        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "Nothing stored yet." in d.find_element(By.ID, "stored-files").text)
        assert browser.title == "packetron uploads"

        browser.find_element(By.ID, "file-input").send_keys(str(upload))
        browser.find_element(By.ID, "note-input").send_keys("sent by chromium")
        browser.find_element(By.ID, "submit-button").click()
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.stored-file"))

        assert len(rows) == 1
        assert rows[0].get_attribute("data-name") == "holiday photo.bin"
        assert rows[0].get_attribute("data-sha256") == expected
        assert "sent by chromium" in rows[0].text
        assert browser.find_element(By.ID, "status").text == "Stored 1 file(s)."
        browser.save_screenshot(str(tmp_path / "after-upload.png"))

        stored = list((storage / "files").iterdir())
        assert len(stored) == 1 and stored[0].name.endswith("-holiday_photo.bin")
        assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == expected
        assert list((storage / "incoming").iterdir()) == []

        link = rows[0].find_element(By.TAG_NAME, "a").get_attribute("href")
        assert requests.get(link, timeout=10).content == content
    finally:
        server.stop()
