#!/usr/bin/env bash
# Inkwash: set up (first run) and launch.
#   ./inkwash.sh [serve OPTIONS]      set up .venv if needed, then launch the app at http://127.0.0.1:7860
#                                     (`./inkwash.sh serve --help`: --listen, --auth, --port, TLS ...)
#   ./inkwash.sh test [PYTEST ARGS]   same set-up with the test extras, then run the test suite
#   ./inkwash.sh run WORKFLOW [...]   run a workflow headless (see `./inkwash.sh run --help`)
#   ./inkwash.sh bench                run the benchmarks in bench/
#   ./inkwash.sh train-demo [...]     re-train the bundled demo models from scratch (resumable by stage)
#   ./inkwash.sh screenshots          regenerate docs/screenshots/ (the app on the demo model, in Chromium)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {  # $1: pip extras, e.g. "[test]"
    local extras=$1 stamp="$VENV/.installed$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "inkwash: creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "inkwash: installing Inkwash and its dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip
        # torch first and on its own: it is by far the largest download, and a failure here is clearer.
        "$VENV/bin/python" -m pip install -q "torch>=2.4" "torchvision>=0.19"
        "$VENV/bin/python" -m pip install -q -e ".$extras"
        touch "$stamp"
    fi
}

browser_setup() {  # Debian's Chromium for the browser tests; Playwright drives it (never `playwright install`)
    [ -x /usr/bin/chromium ] && return 0
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "inkwash: installing chromium for the browser tests" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "inkwash: /usr/bin/chromium is missing (apt-get install chromium chromium-driver); browser tests will skip" >&2
    fi
}

command=${1:-launch}
case "$command" in
    test)
        shift
        setup "[test]"
        browser_setup
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    run)
        shift
        setup ""
        exec "$VENV/bin/inkwash" run "$@"
        ;;
    bench)
        shift
        setup "[test]"
        for script in bench/bench_*.py; do
            echo "== $script"
            "$VENV/bin/python" "$script" "$@"
        done
        ;;
    screenshots)
        shift
        setup "[test]"
        browser_setup
        exec "$VENV/bin/python" tests/screenshots.py "$@"
        ;;
    train-demo)
        shift
        setup ""
        exec "$VENV/bin/python" -m inkwash.demo.train "$@"
        ;;
    launch|serve)
        [ "$command" = serve ] && shift
        setup ""
        exec "$VENV/bin/inkwash" serve "$@"
        ;;
    *)
        echo "usage: ./inkwash.sh [serve [OPTIONS] | test [PYTEST ARGS] | run WORKFLOW [--set NODE.INPUT=VALUE ...] | bench | train-demo | screenshots]" >&2
        exit 2
        ;;
esac
