#!/usr/bin/env bash
# Crash soak for referral delivery: the integration crash test with 100 kill -9 by default.
#   bench/crash_referrals.sh [KILLS] [REFERRALS] [SEED]
# Needs a built tree (CARTGATE_BIN, default build/cartgate) and tests/fhir-server/node_modules.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
export CARTGATE_SOURCE_DIR=$SRC
export CARTGATE_BIN=${CARTGATE_BIN:-$SRC/build/cartgate}
export CARTGATE_CRASH_KILLS=${1:-100}
export CARTGATE_CRASH_REFERRALS=${2:-600}  # enough work that every kill lands mid-send
export CARTGATE_CRASH_SEED=${3:-1}
exec bash "$SRC/tests/integration/test_referral_delivery.sh"
