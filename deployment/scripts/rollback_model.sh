#!/usr/bin/env bash
# Take the served version of MODEL out of service; the blessed version before it is served again, live.
# Usage: rollback_model.sh MODEL [--config FILE]
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 MODEL [--config FILE]" >&2
  exit 2
fi
exec "${TRIALFLOW_BIN:-trialflow}" models rollback "$@"
