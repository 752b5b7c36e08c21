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
step "Run the scenarios written in the flows (test blocks)" saleflow test flows/*.flow
step "Draw The Model as a Mermaid flowchart" saleflow graph flows/the_model.flow --format mermaid

# ---------------------------------------------------------------------------
# Run The Model on the embedded default (SQLite): a handful of leads take
# different paths.  The clock is fixed per step (--now), so every run prints
# the same story.
mkdir -p out
export SALEFLOW_DB="sqlite:///out/demo.db"
rm -f out/demo.db out/demo.db-wal out/demo.db-shm
at() { export SALEFLOW_NOW="$1"; }

at 2026-03-02T09:00:00Z
step "Deploy the flow (idempotent by content)" saleflow deploy flows/the_model.flow

step "acme: a hot inbound lead, BANT complete" \
  saleflow lead add acme --flow the_model --set email=cto@acme.example --set company=Acme \
  --set employees=800 --set budget=60000 --set authority=decision_maker --set need=true --set timeframe_days=30
step "acme asks a question: the skip lead -> sql fires" saleflow event acme inbound_question

step "globex: a normal lead, nurtured by content" saleflow lead add globex --set email=ops@globex.example
step "globex attends a seminar" saleflow event globex seminar_attended --content "SaaS ops day"
step "globex downloads three whitepapers and visits seven times: score 60, an MQL" \
  saleflow event globex content_download --count 3
saleflow event globex web_visit --count 7
step "globex gets an owner: contacting (SLA 2 days)" saleflow lead set globex owner=sam
step "Why globex is not yet a SAL" saleflow show globex

step "initech: qualified by BANT after an inbound question" \
  saleflow lead add initech --set email=it@initech.example --set budget=20000 --set authority=influencer \
  --set need=true --set timeframe_days=60
saleflow event initech inbound_question >/dev/null
step "initech stalls: lost on timing, recycled to nurturing (a new cycle)" saleflow lead set initech lost_reason=timing
saleflow advance initech --to nurturing

step "Field Sales is at capacity: 50 opportunities are already open" \
  python -c "
from saleflow import Engine
engine = Engine.open(db='sqlite:///out/demo.db', now='2026-03-02T09:00:00Z', actor='demo')
for i in range(50):
    engine.add_lead(f'pipeline-{i:02d}', flow='the_model', email=f'p{i}@example.com')
    engine.advance(f'pipeline-{i:02d}', to='opportunity', force=True, reason='opened before saleflow')
print(sum(1 for _ in engine.leads(stage='opportunity')), 'leads in opportunity')
"
at 2026-03-04T10:00:00Z
step "acme holds a meeting: opportunity is full, acme waits" saleflow event acme meeting_held
saleflow show acme | grep -E "stage|opportunity"
step "A pipeline lead is disqualified: room frees, acme enters" \
  saleflow advance pipeline-00 --to disqualified --reason "no project"
saleflow show acme | grep -E "^ +stage"

at 2026-03-10T10:00:00Z
step "acme: problem and fit confirmed; the proposal stage is manual" saleflow lead set acme problem_known=true solution_fit=true
saleflow advance acme --to proposal --reason "proposal sent"
at 2026-03-20T10:00:00Z
step "acme negotiates, then signs: closed won, onboarding" saleflow lead set acme expected_value=90000
saleflow event acme contract_signed

at 2026-03-21T00:00:00Z
step "Customer Success has acme" saleflow leads --team customer_success
step "Inside Sales has globex" saleflow leads --team inside_sales
step "Marketing nurtures initech (recycled) again" saleflow leads --team marketing
step "acme's history, every move audited" saleflow history acme
step "globex's whole journal: fields set, events, moves" saleflow history globex --all
step "The change feed: the last five journal entries, as JSON Lines" saleflow changes --since "$(($(saleflow changes | wc -l) - 5))"
step "Verify every hash chain and replay every journal" saleflow audit verify
step "An anchor to keep outside the database (a ticket, a git commit)" saleflow audit anchor -o out/anchor.json
step "Verify again, against the anchor" saleflow audit verify --anchor out/anchor.json
step "KPIs per stage and team (the embedded SQLite store)" saleflow report --flow the_model
step "The same as one self-contained HTML page (funnel, flow with live counts, KPI tables)" \
  saleflow report --flow the_model --format html -o out/report.html
