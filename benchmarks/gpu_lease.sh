#!/usr/bin/env bash
# One lent GPU, one command: benchmarks/gpu_check.py, its results brought back in the few files a lease returns.
#
#   bash benchmarks/gpu_lease.sh OUT NANO_DATA [gpu_check.py options...]
#
# On a machine lent by the workplace's `device` tool (docs/training.md, "Check the machine"): the working tree
# travels, but the lease brings back at most 8 files of ≤ 16 MiB from OUT, ≤ 2 folders down.  So gpu_check writes
# under /tmp, and this script returns:
#   OUT/gpu-check.md            the report (gpu_check's summary and every phase's table)
#   OUT/console.log             gpu_check's console
#   OUT/results.tar.gz          every phase's .json/.md/.log, the paper runs' log.csv, and the nano run without
#                               its weights: log.csv, val.csv, train-config.yaml, the newest checkpoint's
#                               state.json, the newest validation samples, final/ if the run completed (in
#                               15 MiB pieces, results.tar.gz.part-aa, -ab, ..., when it is larger)
#   OUT/state.safetensors.part-aa, -ab, ...   the newest nano checkpoint's weights in 15 MiB pieces, unless the
#                               run completed (its final/ is the product, and the pieces could overflow 64 MiB)
# Rebuild the run folder here with `bash benchmarks/gpu_lease.sh --unpack FILES_AT RUN_FOLDER`.
#
# Python packages the GPU machine lacks travel as wheels in .whl/ (git-ignored; docs/decisions.md, "GPU lease",
# says which): they are installed into /tmp/site first.  The exit code is gpu_check's.
set -u
if [ "${1:-}" = "--unpack" ]; then  # here: FILES_AT RUN → RUN/{log.csv,...,checkpoints/step-N/state.safetensors}
    src=$2 run=$3
    mkdir -p "$run" && cat "$src"/results.tar.gz* | tar xzf - -C "$run" --strip-components=1 nano || exit 1
    [ -d "$run/final" ] && { echo "gpu_lease: $run/final (the run completed)"; exit 0; }
    step=$(cd "$run/checkpoints" 2>/dev/null && ls -d step-* | sort | tail -1)
    [ -n "$step" ] || { echo "gpu_lease: $src holds neither final/ nor a checkpoint" >&2; exit 1; }
    dest=$run/checkpoints/$step/state.safetensors
    cat "$src"/state.safetensors.part-* > "$dest.tmp" && mv "$dest.tmp" "$dest" || { rm -f "$dest.tmp"; exit 1; }
    echo "gpu_lease: $run/checkpoints/$step"
    exit 0
fi
out=$1 data=$2
shift 2
work=${GPU_LEASE_WORK:-/tmp/gpu-lease}  # where gpu_check writes (GPU_LEASE_WORK: tests)
piece=$((15 * 1024 * 1024))  # under the 16 MiB a returned file may have
in_pieces() { split -b "$piece" "$1" "$2.part-"; }  # FILE OUT_PREFIX → OUT_PREFIX.part-aa, -ab, ...
mkdir -p "$out" "$work"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_lease: installing .whl/ failed" | tee "$out/console.log"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
(nvidia-smi; python3 -c "import torch, sys; print(sys.version, torch.__version__)") > "$work/machine.txt" 2>&1

python3 benchmarks/gpu_check.py --out "$work/check" --nano-data "$data" --nano-run "$work/nano" "$@" 2>&1 \
    | tee "$out/console.log"
rc=${PIPESTATUS[0]}

# ---- collect: small files in one archive, the checkpoint's weights in pieces
cp "$work/check/gpu-check.md" "$out/" 2>/dev/null
cd "$work" || exit 1
keep=(machine.txt check/*.md check/*.json check/*.log check/train/*/log.csv)
if [ -d nano ]; then
    keep+=(nano/log.csv nano/val.csv nano/train-config.yaml nano/final)
    newest=$(ls -d nano/checkpoints/step-* 2>/dev/null | sort | tail -1)
    if [ -n "$newest" ] && [ ! -d nano/final ]; then
        keep+=("$newest/state.json")
        in_pieces "$newest/state.safetensors" "$out/state.safetensors"
    fi
    sample=$(ls -d nano/samples/step-* 2>/dev/null | sort | tail -1)
    [ -n "$sample" ] && keep+=("$sample")
fi
existing=()
for f in "${keep[@]}"; do [ -e "$f" ] && existing+=("$f"); done
tar czf "$out/results.tar.gz" "${existing[@]}"
if [ "$(stat -c %s "$out/results.tar.gz")" -gt "$piece" ]; then  # a large final/: in pieces too
    in_pieces "$out/results.tar.gz" "$out/results.tar.gz" && rm "$out/results.tar.gz"
fi
ls -la "$out"
exit "$rc"
