#!/usr/bin/env bash
# make chaos: the chaos suite (proxy/tests/it/chaos_*.rs) alone, then its figures as one table
# in docs/reliability.md. The same tests run in `make test`; there they assert, here they also
# write what they measured (common::figure, through DIME_CHAOS_FIGURES).
#
#   CHAOS_DOC   the page whose table is rewritten (default docs/reliability.md; empty: none)
set -euo pipefail
cd "$(dirname "$0")/../../.."

say() { printf 'chaos: %s\n' "$*" >&2; }

DOC=${CHAOS_DOC-docs/reliability.md}
OUT=target/chaos
mkdir -p "$OUT"
FIGURES=$PWD/$OUT/figures.tsv
rm -f "$FIGURES"

# The commit the figures are of: the page this script writes does not count as a change.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- . ':!docs/reliability.md' 2>/dev/null; then
    commit=$commit-dirty
fi

# Built as `make test` builds (the whole workspace with its tests, so the same features and
# nothing rebuilt after it), which also builds dime-origin beside the test binary: the real
# streamers chaos_pools runs.
DIME_CHAOS_FIGURES=$FIGURES cargo nextest run --workspace --no-fail-fast \
    -E 'package(dime-edge) & binary(it) & test(/^chaos_/)'
[[ -s $FIGURES ]] || { say "no test wrote a figure to $FIGURES"; exit 1; }

header="| Case | Figure |"
rule="|---|---|"
rows=$(sort "$FIGURES" | awk -F'\t' '{ printf "| %s | %s |\n", $1, $2 }')
printf '\n%s\n%s\n%s\n' "$header" "$rule" "$rows"

if [[ -n $DOC ]]; then
    table=$(
        printf '<!-- chaos:begin (written by make chaos: proxy/tests/chaos/run.sh) -->\n'
        printf '%s, commit `%s`, a debug build of dime-edge (as `make test` runs it), %s.\n\n' \
            "$(date -u +%Y-%m-%d)" "$commit" "$(nproc) cores"
        printf '%s\n%s\n%s\n' "$header" "$rule" "$rows"
        printf '<!-- chaos:end -->'
    )
    if grep -q '^<!-- chaos:begin' "$DOC" 2>/dev/null; then
        TABLE=$table perl -0pi -e 's/^<!-- chaos:begin.*?<!-- chaos:end -->/$ENV{TABLE}/ms' "$DOC"
        say "table written to $DOC"
    else
        say "$DOC has no <!-- chaos:begin --> marker: table not written"
        exit 1
    fi
fi
