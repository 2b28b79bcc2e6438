#!/bin/sh
# Runs `iotwatch eval nab` on the NAB subset in ../shared/data/nab and scores it
# with NAB's rule (../shared/tools/nabscore.py): standard, reward_low_FP_rate and
# reward_low_FN_rate profiles. Usage, from the repository root:
#   bench/nab/run.sh [DATA_DIR] [OUT_DIR] [extra nabscore.py flags, e.g. --per-file]
set -eu
SHARED=${SHARED:-../shared}
DATA=${1:-$SHARED/data/nab/data}
OUT=${2:-var/nab/iotwatch}
[ $# -ge 2 ] && shift 2 || shift $#
go build -o var/nab/iotwatch-bin ./cmd/iotwatch
rm -rf "$OUT"
var/nab/iotwatch-bin eval nab --data "$DATA" --out "$OUT"
python3 "$SHARED/tools/nabscore.py" "$OUT" \
	--windows "$SHARED/data/nab/labels/combined_windows.json" \
	--profiles "$SHARED/data/nab/config/profiles.json" "$@"
