#!/usr/bin/env bash
# Format and lint check of the console's JavaScript (admin_ui/, config in biome.json), then its import rules.
# Needs only Node 20+ and the npm registry: npx fetches the pinned Biome on first use. Exits non-zero on any
# problem. `--write` applies the formatter and the safe fixes first (make format).
set -euo pipefail
cd "$(dirname "$0")/.."
write=()
if [ "${1:-}" = "--write" ]; then write=(--write); fi
npx --yes @biomejs/biome@2.6.9 check "${write[@]}" --error-on-warnings admin_ui .ci/check-js-imports.mjs biome.json
node .ci/check-js-imports.mjs admin_ui
