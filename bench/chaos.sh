#!/usr/bin/env bash
# Whole-pipeline chaos soak: tests/integration/test_chaos.sh with 100 random kill -9 (plus
# the four step-boundary kills) by default; the figures line goes to stdout and to REPORT.
#   bench/chaos.sh [KILLS] [SEED] [PATIENTS] [REPORT]
# Needs a built tree (CARTGATE_BIN, default build/cartgate) and tests/fhir-server/node_modules.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
export CARTGATE_SOURCE_DIR=$SRC
export CARTGATE_BIN=${CARTGATE_BIN:-$SRC/build/cartgate}
export CARTGATE_CHAOS_KILLS=${1:-100}
export CARTGATE_CHAOS_SEED=${2:-1}
export CARTGATE_CHAOS_PATIENTS=${3:-120}
export CARTGATE_CHAOS_REPORT=${4:-/dev/null}
exec bash "$SRC/tests/integration/test_chaos.sh"
