#!/usr/bin/env bash
# The one prepared GPU check: fits one device call (BUDGET seconds, default 550). Steps run in order of priority;
# each gets its own time limit, cut to what is left of the budget, and a step that cannot get 20 s is skipped.
# Everything lands in $OUT (the device tool's folder, at most 8 files come back): summary.txt, and logs.tar.gz
# with every step's log, JSON and the quickstart's metrics, rewritten after each step so a cut-off run keeps
# what finished.
#
# Prepare here first (the GPU machine has jax, flax, optax, orbax, chex, torch, OpenCV, cloudpickle and etils, but
# not ml_collections, nor what the streamed-input step needs):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 simplejpeg==1.9.0 portpicker importlib_resources
# then run it there:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=590)
# Here, on CPU:  BUDGET=900 bash benchmarks/device_check.sh --smoke   (tiny sizes: every step runs)
set -uo pipefail
OUT=${OUT:-/tmp/device_check}
BUDGET=${BUDGET:-550}
LOGS=/tmp/device_check_logs
rm -rf "$LOGS" /tmp/jax_cache /tmp/quickstart /tmp/quickstart_warm /tmp/quickstart_concurrent /tmp/resnet20 /tmp/cifar
mkdir -p "$OUT" "$LOGS"
if ls .whl/*.whl >/dev/null 2>&1; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >"$LOGS/pip.log" 2>&1; then
    export PYTHONPATH=/tmp/site
  else  # e.g. the cp312 wheels on another Python (a --smoke run here): go on with what is installed
    echo "pip: the wheels in .whl/ did not install ($(tail -n 1 "$LOGS/pip.log")); using what is installed" \
      | tee -a "$LOGS/summary.txt"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache   # the CLI's persistent cache, shared by every step
pack() { tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null; cp "$LOGS/summary.txt" "$OUT/" 2>/dev/null; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log, never stop the script
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 20)); then echo "== $name: skipped (budget spent)" | tee -a "$LOGS/summary.txt"; return; fi
  echo "== $name ($limit s): $*" | tee -a "$LOGS/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  echo "   exit $? in $((SECONDS - t0)) s" | tee -a "$LOGS/summary.txt"
  tail -n 4 "$LOGS/$name.log" | sed 's/^/   | /' >>"$LOGS/summary.txt"
  pack
}
if [[ ${1:-} == --smoke ]]; then   # tiny sizes on any machine (CPU): checks that every step runs
  SMOKE=1; QS=(--config.lottery.levels=1 --config.train.epochs=2 "--config.experiment.baselines=('random',)")
  STACKED=(--smoke); FAMILIES=(--models cifar_vgg_11_8 --steps 2 --repeats 1 --warmup 1)
  VIT=(--models vit_2_64_p4 --batch-size 8 --steps 2 --repeats 1 --warmup 1)
  STEP20=(--models cifar_resnet_8_4 --batch-size 16 --steps 2 --repeats 1 --warmup 1)
  IMAGENET=(--models imagenet_resnet_18_8 --batch-size 8 --steps 2 --repeats 1 --warmup 1)
  CLI=(--config.model.name=cifar_resnet_8_4 --config.train.batch_size=64 --config.train.epochs=1
       --config.lottery.rewind_steps=2 --config.train.milestones="()") ; CIFAR_N=256; PIPE=(--smoke)
else
  SMOKE=0; QS=(); STACKED=(--models cifar_resnet_56 --stacks 1,8 --dtypes bfloat16 --epoch-images 6400)
  STEP20=(--models cifar_resnet_20 --steps 50 --repeats 3)
  FAMILIES=(--models cifar_vgg_16 --batch-size 128 --steps 30 --repeats 3)
  VIT=(--models vit_6_192_p4,vit_6_64_p7 --batch-size 128 --steps 30 --repeats 3)
  IMAGENET=(--models imagenet_resnet_18,imagenet_resnet_50 --batch-size 256 --steps 20 --repeats 3)
  CLI=(--config.train.epochs=3); CIFAR_N=10000
  PIPE=(--images 1000 --workers 0,16 --batches 10 --decoder-seconds 1)
fi
STEP_VARIANTS=(--variants torch_eager_fp32,elax_step_masked_fp32,elax_step_dense_fp32,elax_step_masked_bf16
               --skip-other-path)
nvidia-smi >"$LOGS/nvidia-smi.txt" 2>&1
python3 -c 'import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__,
o.__version__, jax.devices())' >"$LOGS/versions.txt" 2>&1
cat "$LOGS/versions.txt" >>"$LOGS/summary.txt"

# Issue 13: the quickstart's wall time (target <= 30 s on an H100), cold and then warm compilation cache.
step quickstart 120 python3 main.py --config configs/quickstart.py --workdir /tmp/quickstart --config.progress=False \
  "${QS[@]}"
(cd /tmp && find quickstart -name '*.json*' | tar -czf "$LOGS/quickstart_workdir.tar.gz" -T -) 2>/dev/null
ls -lR --time-style=full-iso /tmp/quickstart >"$LOGS/quickstart_listing.txt" 2>&1
step quickstart_warm 60 python3 main.py --config configs/quickstart.py --workdir /tmp/quickstart_warm \
  --config.progress=False "${QS[@]}"
# Runs side by side (the CPU default, 3 at once; 1 on accelerators until measured there), warm cache.
step quickstart_concurrent 60 python3 main.py --config configs/quickstart.py --workdir /tmp/quickstart_concurrent \
  --config.progress=False --config.experiment.concurrent_runs=3 "${QS[@]}"
# Issue 11: the new families' train step against PyTorch eager (ImageNet at 256 on 224x224, VGG-16 at 128).
step bench_imagenet 150 python3 benchmarks/throughput.py "${IMAGENET[@]}" "${STEP_VARIANTS[@]}" \
  --out "$LOGS/bench_imagenet.json"
step bench_vgg 60 python3 benchmarks/throughput.py "${FAMILIES[@]}" --variants torch_eager_fp32,elax_step_masked_bf16 \
  --skip-other-path --out "$LOGS/bench_vgg.json"
# Issue 30: the ViT's train step (configs/vit.py's model on CIFAR shapes, and the Fashion-MNIST evidence's);
# no PyTorch reference for this family yet.
step bench_vit 60 python3 benchmarks/throughput.py "${VIT[@]}" --variants elax_step_masked_fp32,elax_step_dense_fp32,elax_step_masked_bf16 \
  --skip-torch --skip-other-path --out "$LOGS/bench_vit.json"
# Issue 10: the cost of deterministic GPU kernels (train.deterministic): the same step with and without them.
for mode in default deterministic; do
  flags=""; [[ $mode == deterministic ]] && flags="--xla_gpu_deterministic_ops=true"
  XLA_FLAGS="$flags" step "step_$mode" 45 python3 benchmarks/throughput.py "${STEP20[@]}" \
    --variants elax_step_masked_fp32 --skip-torch --skip-other-path --out "$LOGS/step_$mode.json"
done
# Issue 13: stacked runs where they may pay: ResNet-56, K = 1 and 8, bf16 (ResNet-20 was measured: no gain).
step bench_stacked 100 python3 benchmarks/stacked.py "${STACKED[@]}" --out "$LOGS/bench_stacked.json"
# Issue 12: the streamed pipeline on this machine's cores against ResNet-18's step.
if python3 -c "import grain, simplejpeg, cv2" 2>/dev/null; then
  step input_pipeline 100 python3 benchmarks/input_pipeline.py "${PIPE[@]}" --out "$LOGS/input_pipeline.json"
fi
# Measured on an H100 on 2026-11-26 (docs/performance.md); rerun when time is left.
XLA_PYTHON_CLIENT_PREALLOCATE=false step resume_tests 100 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/test_lottery.py tests/test_cli.py -k "resume or sigkill or interrupted"
python3 - "$CIFAR_N" <<'PY'
import os, sys, numpy as np
n, folder = int(sys.argv[1]), "/tmp/cifar/cifar-10-batches-bin"
os.makedirs(folder, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    records = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1)
    open(os.path.join(folder, name), "wb").write(records.astype(np.uint8).tobytes())
PY
step resnet20_cli 70 python3 main.py --config configs/cifar_resnet.py --workdir /tmp/resnet20 --config.progress=False \
  --config.data.dir=/tmp/cifar --config.lottery.levels=1 "${CLI[@]}"
cat /tmp/resnet20/level_0*/metrics.jsonl >"$LOGS/resnet20_metrics.jsonl" 2>/dev/null
pack
cat "$LOGS/summary.txt"
