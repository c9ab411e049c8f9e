#!/usr/bin/env bash
# Gate the evaluated candidates, promote the best blessed one into the model repository and render the
# Kubernetes manifests: `trialflow pipeline deployment`. A running server picks the new version up by itself.
# Usage: deploy_model.sh [--config FILE] [pipeline flags, e.g. --force]
set -euo pipefail
exec "${TRIALFLOW_BIN:-trialflow}" pipeline deployment "$@"
