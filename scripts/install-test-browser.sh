#!/usr/bin/env sh
# The web page test drives Debian's `chromium` through Playwright (no browser download). Install it when it is
# missing and this machine can (root + apt-get); otherwise say so and go on: the test then skips with a reason.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser test (apt-get) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: apt-get could not install chromium; tests/serve/test_web.py will be skipped" >&2
else
    echo "note: no chromium and no root apt-get here; tests/serve/test_web.py will be skipped" \
         "(install Debian 'chromium' to run it)" >&2
fi
exit 0
