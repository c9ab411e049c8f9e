#!/usr/bin/env bash
# Serve an existing version again (it is published as a copy under the next version number). A version that is
# not blessed is refused unless --force is given; a forced promotion is recorded as such.
# Usage: promote_version.sh MODEL VERSION [--force] [--config FILE]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL VERSION [--force] [--config FILE]" >&2
  exit 2
fi
exec "${TRIALFLOW_BIN:-trialflow}" models promote "$@"
