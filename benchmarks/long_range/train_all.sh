#!/usr/bin/env bash
# Train every comparison variant in sequence (each resumes where a killed run stopped).
#   bash benchmarks/long_range/train_all.sh          (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in sn2-cmp-efa sn2-cmp-all-to-all sn2-cmp-local sn2-cmp-mara \
            cumulene-cmp-efa cumulene-cmp-efa-exact-hf cumulene-cmp-all-to-all cumulene-cmp-local cumulene-cmp-mara; do
  efa-calc train "benchmarks/long_range/$name.toml"
done
