#!/usr/bin/env bash
# Fuzzes the inbound frame decoders (fuzz/fuzz_targets) with cargo-fuzz, each target for
# a bounded time. Not part of the normal test command: `cargo test` runs the property
# tests in tests/codec_props.rs instead.
#
#   scripts/fuzz.sh              # every target, 60 s each
#   scripts/fuzz.sh 300          # every target, 5 min each
#   scripts/fuzz.sh 60 decode_json_batch
#
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer=address); installs
# cargo-fuzz from crates.io when it is missing. Corpora grow in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>); a crash lands in fuzz/artifacts/<target>/ and makes
# this script fail. Turn every crash into a regression test in tests/codec_props.rs (or a
# unit test next to the decoder) before fixing it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-${FUZZ_SECONDS:-60}}"
shift || true
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! rustup toolchain list | grep -q "^${toolchain}"; then
  echo "fuzz.sh: the ${toolchain} toolchain is missing: rustup toolchain install ${toolchain}" >&2
  exit 2
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd "$repo"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "+${toolchain}" fuzz list)
fi

for target in "${targets[@]}"; do
  corpus="fuzz/corpus/${target}"
  mkdir -p "$corpus"
  echo "fuzz.sh: ${target} for ${seconds} s" >&2
  cargo "+${toolchain}" fuzz run "$target" "$corpus" "fuzz/seeds/${target}" -- \
    -max_total_time="$seconds" \
    -max_len=65536 \
    -timeout=10 \
    -dict=fuzz/protocol.dict \
    -print_final_stats=1
done
echo "fuzz.sh: no crashes" >&2
