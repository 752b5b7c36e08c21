#!/usr/bin/env bash
# Import the X Education leads (the public Kaggle "Lead Scoring" case study)
# into flows/x_education.flow and print the funnel they make.
#
#   scripts/x_education.sh PATH_TO_CSV [DB]
#
# DB is a database URL or a SQLite file (default: x_education.db in the
# current folder).  Importing into a database that already holds the leads
# updates them; nothing moves twice.  Uses `saleflow` from PATH, else the
# repository's .venv.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PATH_TO_CSV [DB]" >&2
  exit 2
fi
csv=$1
db=${2:-x_education.db}
case $db in
  *://*) ;;
  *) db="sqlite:///$db" ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
if command -v saleflow >/dev/null 2>&1; then
  saleflow=(saleflow)
elif [ -x "$repo/.venv/bin/saleflow" ]; then
  saleflow=("$repo/.venv/bin/saleflow")
else
  echo "error: saleflow is not installed (run make venv)" >&2
  exit 2
fi
sf() { "${saleflow[@]}" --db "$db" "$@"; }

# The column names map themselves to the flow's fields ("Lead Origin" is
# lead_origin); "Select" (a form left at its default) and blanks are unset.
sf import "$csv" --flow "$repo/flows/x_education.flow" \
  --id-column "Prospect ID" --map TotalVisits=total_visits

echo
if sf report --help >/dev/null 2>&1; then
  sf report --flow x_education
else
  for stage in inquiry engaged qualified enrolled lost; do
    printf '%-10s %s\n' "$stage" "$(sf leads --flow x_education --stage "$stage" | tail -n 1)"
  done
fi
