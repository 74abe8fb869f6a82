#!/usr/bin/env bash
# The one prepared GPU check (about 10 minutes of device time). Results go to $OUT (the device tool's folder).
#
# Prepare here first (the GPU machine has jax, flax, optax, orbax, chex and torch, but not ml_collections):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl ml_collections==1.1.0
#   (the streamed-input step also needs: grain array_record simplejpeg opencv-python-headless etils
#    cloudpickle portpicker; download them the same way with --only-binary=:all: --no-deps)
# then run it there:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=590)
set -uo pipefail
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, never stop the script
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "   exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -c 'import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())' \
  >"$OUT/versions.txt" 2>&1
# Resume must be bit-identical on the GPU with deterministic kernels (the tests set them).
step resume_tests 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_lottery.py tests/test_cli.py \
  -k "resume or sigkill or interrupted"
step quickstart 120 python3 main.py --config configs/quickstart.py --workdir /tmp/quickstart --config.progress=False
step bench_cifar 120 python3 benchmarks/throughput.py --models cifar_resnet_20,cifar_vgg_16 --skip-other-path \
  --out "$OUT/bench_cifar.json"
step bench_imagenet 150 python3 benchmarks/throughput.py --models imagenet_resnet_18,imagenet_resnet_50 \
  --batch-size 256 --epoch-images 5120 --epoch-repeats 2 --skip-other-path --out "$OUT/bench_imagenet.json"
step bench_stacked 200 python3 benchmarks/stacked.py --epoch-images 12800 --out "$OUT/bench_stacked.json"
if python3 -c "import grain, simplejpeg, cv2" 2>/dev/null; then
  step input_pipeline 150 python3 benchmarks/input_pipeline.py --images 3000 --out "$OUT/input_pipeline.json"
fi
cat "$OUT/summary.txt"
