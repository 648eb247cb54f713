#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets (proxy/fuzz) under AFL++ with cargo-afl, runs each for
# a time budget from its corpus, prints what each run did and writes it to docs/reliability.md.
# Installs what is missing: a C toolchain (apt), cargo-afl (crates.io), whose install builds
# AFL++ from the source the crate ships.
#
# Knobs (environment):
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  names to run, space- or comma-separated (default: all, in src/lib.rs order)
#   FUZZ_MERGE=1  afterwards, fold what each run found into corpus/TARGET/ (afl-cmin, at most
#                 FUZZ_MAX_CORPUS files per target, default 40; the seeds are always kept)
#   FUZZ_DOC      the page whose fuzz table gets the rows of the targets that ran (default
#                 docs/reliability.md; the other targets' rows stay as they were; empty: none)
#   FUZZ_NICE     priority of the build and the runs (default 10)
# Findings of the last run: target/fuzz/out/TARGET/default/{crashes,hangs,queue}. Exits 1 when a
# run saved a crash or a hang.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
FUZZ=$ROOT/proxy/fuzz
AFL_VERSION=0.18.2 # cargo-afl; the afl crate in proxy/fuzz/Cargo.toml is pinned to the same
SECONDS_EACH=${FUZZ_SECONDS:-60}
MAX_CORPUS=${FUZZ_MAX_CORPUS:-40}
NICE=${FUZZ_NICE:-10}
DOC=${FUZZ_DOC-docs/reliability.md}
# Its own target directory: cargo-afl's RUSTFLAGS would otherwise rebuild the normal one.
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")/fuzz
OUT=$TARGET_DIR/out
BIN=$TARGET_DIR/release/dime-fuzz

say() { printf 'fuzz: %s\n' "$*"; }
die() {
    printf 'fuzz: error: %s\n' "$*" >&2
    exit 1
}

[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS=$SECONDS_EACH: a whole number of seconds"
[[ $MAX_CORPUS =~ ^[1-9][0-9]*$ ]] || die "FUZZ_MAX_CORPUS=$MAX_CORPUS: a whole number"

# --- what AFL++ needs -----------------------------------------------------------------------

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

# AFL++ is C, built by cargo-afl's install with cc and make.
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
    ((EUID == 0)) || die "a C compiler and make are missing: apt-get install build-essential (as root)"
    say "installing build-essential (apt)"
    apt-get -q -o DPkg::Lock::Timeout=120 update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 install -y \
        --no-install-recommends build-essential >/dev/null
fi

installed_afl=$(cargo afl --version 2>/dev/null | awk '{ print $2 }' || true)
if [[ $installed_afl != "$AFL_VERSION" ]]; then
    say "installing cargo-afl $AFL_VERSION (crates.io; its install builds AFL++, a few minutes)"
    nice -n "$NICE" cargo install cargo-afl --locked --version "$AFL_VERSION" --quiet ||
        die "cargo install cargo-afl failed (output above)"
fi
# The install builds AFL++ for the toolchain at hand; another toolchain needs its own build.
afl_data=${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs
rustc_version=$(rustc --version | awk '{ print $2 }')
if ! compgen -G "$afl_data/rustc-$rustc_version-*/afl.rs-$AFL_VERSION/afl/bin/afl-fuzz" >/dev/null; then
    say "building AFL++ for rustc $rustc_version"
    nice -n "$NICE" cargo afl config --build --force || die "cargo afl config --build failed"
fi

# --- the targets ----------------------------------------------------------------------------

mapfile -t ALL < <(sed -n 's/^ *name: "\([a-z_]*\)",$/\1/p' "$FUZZ/src/lib.rs")
((${#ALL[@]} > 0)) || die "no targets found in $FUZZ/src/lib.rs"
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a TARGETS <<<"${FUZZ_TARGETS//,/ }"
    for t in "${TARGETS[@]}"; do
        [[ " ${ALL[*]} " == *" $t "* ]] || die "FUZZ_TARGETS: no target '$t' (targets: ${ALL[*]})"
    done
else
    TARGETS=("${ALL[@]}")
fi

# The commit the runs test, taken before the build: a change made while it builds or runs is
# not in the binary. Only what the binary is built from counts (not tests, docs, this page or
# the corpora it adds to).
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- Cargo.toml Cargo.lock proxy origin ':!proxy/tests' ':!origin/*/tests' \
    ':!origin/e2e' ':!proxy/fuzz/corpus' ':!*.sh' ':!*.md' 2>/dev/null; then
    commit=$commit-dirty
fi

say "building the targets (cargo afl build --release, $TARGET_DIR)"
CARGO_TARGET_DIR=$TARGET_DIR nice -n "$NICE" cargo afl build --release --quiet -p dime-fuzz --features afl

# AFL++ refuses to start on machines set up for other work unless told it may: crashes are
# caught by the fork server whatever the core pattern, CPU frequency scaling only adds
# noise, and on a shared machine no core is ours alone.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_QUIET=1

stat() { sed -n "s/^$2 *: *//p" "$OUT/$1/default/fuzzer_stats"; }

failed=0
rows=()
for t in "${TARGETS[@]}"; do
    [[ -d $FUZZ/corpus/$t ]] || die "no corpus at proxy/fuzz/corpus/$t"
    rm -rf "${OUT:?}/$t"
    mkdir -p "$OUT/$t"
    dict=()
    [[ -f $FUZZ/dict/$t.dict ]] && dict=(-x "$FUZZ/dict/$t.dict")
    say "$t: ${SECONDS_EACH} s (log: $OUT/$t/afl.log)"
    if ! nice -n "$NICE" cargo afl fuzz -V "$SECONDS_EACH" -i "$FUZZ/corpus/$t" -o "$OUT/$t" \
        "${dict[@]}" -- "$BIN" "$t" >"$OUT/$t/afl.log" 2>&1; then
        tail -n 30 "$OUT/$t/afl.log" >&2
        die "afl-fuzz failed on $t"
    fi
    crashes=$(stat "$t" saved_crashes)
    hangs=$(stat "$t" saved_hangs)
    rows+=("| \`$t\` | $(date -u +%Y-%m-%d) | \`$commit\` | $(stat "$t" run_time) | $(stat "$t" execs_done) | $(stat "$t" execs_per_sec) | $(stat "$t" corpus_count) | $(stat "$t" edges_found) | $crashes | $hangs |")
    if ((crashes > 0 || hangs > 0)); then
        failed=1
        say "$t: $crashes crash(es), $hangs hang(s) in $OUT/$t/default/{crashes,hangs}"
    fi
    if [[ ${FUZZ_MERGE:-0} == 1 ]]; then
        # Seeds are the files not named found-*; what fuzzing found is folded in minimised.
        work=$OUT/$t/merge
        mkdir -p "$work/in"
        cp "$FUZZ/corpus/$t"/* "$OUT/$t/default/queue"/id:* "$work/in/" 2>/dev/null || true
        nice -n "$NICE" cargo afl cmin -i "$work/in" -o "$work/min" -- "$BIN" "$t" >"$work/cmin.log" 2>&1 ||
            die "afl-cmin failed on $t ($work/cmin.log)"
        seeds=$(find "$FUZZ/corpus/$t" -maxdepth 1 -type f ! -name 'found-*' | wc -l)
        find "$FUZZ/corpus/$t" -maxdepth 1 -type f -name 'found-*' -delete
        room=$((MAX_CORPUS > seeds ? MAX_CORPUS - seeds : 0))
        # Smallest first, named by content so reruns keep one copy.
        mapfile -t found < <(find "$work/min" -maxdepth 1 -type f -printf '%s %p\n' | sort -n | cut -d' ' -f2-)
        for f in "${found[@]}"; do
            ((room > 0)) || break
            # An input already kept (a seed) is not kept twice.
            dup=0
            for s in "$FUZZ/corpus/$t"/*; do cmp -s "$f" "$s" && dup=1 && break; done
            ((dup)) && continue
            cp "$f" "$FUZZ/corpus/$t/found-$(sha1sum "$f" | cut -c1-12)"
            room=$((room - 1))
        done
        say "$t: corpus now $(find "$FUZZ/corpus/$t" -maxdepth 1 -type f | wc -l) files"
    fi
done

header="| target | date | commit | seconds | execs | execs/s | corpus | edges | crashes | hangs |"
rule="|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
printf '\n%s\n%s\n' "$header" "$rule"
printf '%s\n' "${rows[@]}"

# The page's table has a row per target, each naming the run it comes from: the rows of the
# targets that ran are replaced, the others kept, in src/lib.rs order.
if [[ -n $DOC ]]; then
    if ! grep -q '^<!-- fuzz:begin' "$DOC" 2>/dev/null; then
        say "$DOC has no <!-- fuzz:begin --> marker: table not written"
        exit $failed
    fi
    declare -A row
    while IFS= read -r line; do
        name=$(sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' <<<"$line")
        # A row of the older layout (no date and commit columns) is not kept.
        [[ -n $name && $(awk -F'|' '{ print NF }' <<<"$line") == 12 ]] && row[$name]=$line
    done < <(sed -n '/^<!-- fuzz:begin/,/^<!-- fuzz:end/p' "$DOC")
    for r in "${rows[@]}"; do
        row[$(sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' <<<"$r")]=$r
    done
    table=$(
        printf '<!-- fuzz:begin (written by make fuzz: proxy/fuzz/run.sh) -->\n'
        printf 'AFL++ %s through cargo-afl %s, one afl-fuzz process per target; each row is the last run of its target, on the commit it names, for FUZZ_SECONDS (execs/s depends on what else the machine ran meanwhile).\n\n' \
            "$(cargo afl --version | sed -n 's/.*AFL++ version \([^)]*\)).*/\1/p')" "$AFL_VERSION"
        printf '%s\n%s\n' "$header" "$rule"
        for t in "${ALL[@]}"; do
            if [[ -n ${row[$t]:-} ]]; then
                printf '%s\n' "${row[$t]}"
            else
                printf '| `%s` | | not run | | | | | | | |\n' "$t"
            fi
        done
        printf '<!-- fuzz:end -->'
    )
    TABLE=$table perl -0pi -e 's/^<!-- fuzz:begin.*?<!-- fuzz:end -->/$ENV{TABLE}/ms' "$DOC"
    say "rows of ${TARGETS[*]} written to $DOC"
fi
exit $failed
