#!/usr/bin/env bash
# Install headless Chromium and its matching chromedriver for the browser tests
# (tests/reports/test_browser.py, marker `browser`). Idempotent: does nothing when
# /usr/bin/chromium and /usr/bin/chromedriver are already there. Needs root (apt).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium and chromedriver already installed" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser.sh: needs root to apt-get install chromium chromium-driver" >&2
  exit 1
fi
echo "installing chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version >&2
/usr/bin/chromedriver --version >&2
