#!/usr/bin/env bash
# Versions of a model in the repository: state, which one is served, where each came from.
# Usage: list_models.sh [MODEL] [--json] [--config FILE]
set -euo pipefail
exec "${TRIALFLOW_BIN:-trialflow}" models list "$@"
