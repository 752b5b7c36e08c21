#!/usr/bin/env bash
# The saleflow demo: what `make demo` shows a newcomer.
#
# It runs from the repository root with `saleflow` on PATH (the Makefile puts
# .venv/bin first).  Each step prints a heading, then the command's output.
set -euo pipefail
cd "$(dirname "$0")/.."

bold="" plain=""
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi

step() {
  printf '\n%s== %s%s\n$ %s\n' "$bold" "$1" "$plain" "${*:2}"
  "${@:2}"
}

step "Check every flow: syntax, names, types, structure" saleflow check flows/*.flow
step "Draw The Model as a Mermaid flowchart" saleflow graph flows/the_model.flow --format mermaid
