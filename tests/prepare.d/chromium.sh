# Sourced by tests/prepare.sh (which defines apt_install).
# Headless Chromium and its WebDriver drive the example upload page in
# tests/http/test_browser.py; without them that test skips.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver
    { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
        || echo "prepare: chromium/chromedriver unavailable; the browser test will skip" >&2
fi
