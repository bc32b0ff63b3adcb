#!/usr/bin/env bash
# meow demo: queue a few tasks on this machine's GPUs (or 4 fake 24 GiB GPUs when there
# is no NVIDIA GPU), watch them get placed, then show where each one ran.
set -euo pipefail
cd "$(dirname "$0")/.."
export MEOW_HOME="${MEOW_HOME:-$PWD/.meow-demo}"
if ! nvidia-smi -L >/dev/null 2>&1; then
    export MEOW_FAKE_GPUS="${MEOW_FAKE_GPUS:-4x24GiB}"
    echo "== no NVIDIA GPU here: using fake GPUs ($MEOW_FAKE_GPUS)"
fi
meow exit --kill >/dev/null 2>&1 || true
rm -rf "$MEOW_HOME"

step='echo "$MEOW_TASK_NAME on GPU(s) [$CUDA_VISIBLE_DEVICES]"; sleep'
echo "== queueing 8 tasks"
meow create "$step 2" -n train-a -c 2 -M 20000 -p 1
meow create "$step 2" -n train-b -c 2 -M 20000
meow create "$step 1" -n eval-1 -M 10000
meow create "$step 1" -n eval-2 -M 10000
meow create "$step 1" -n eval-3 -M 0.5
meow create "$step 1" -n big -c 4 -M 20000 -p 2
meow create "echo \"\$MEOW_TASK_NAME on the CPU\"" -n prep -c 0
meow create "python3 -c 'import sys; sys.exit(3)'" -n broken -c 0
echo "== a Cattino task file: train -> eval, in sequence"
(cd examples/cattino && meow create pipeline.py)
sleep 0.5
echo "== while running"
meow list
meow devices
echo "== waiting for every task to finish"
for name in train-a train-b eval-1 eval-2 eval-3 big prep broken pipeline/train pipeline/eval; do
    meow watch "$name" >/dev/null 2>&1 || true
done
meow list
echo "== the pipeline ran in order"
cat examples/cattino/ran.log && rm -f examples/cattino/ran.log
echo "== where each task ran (its own stdout)"
for name in train-a train-b eval-1 eval-2 eval-3 big prep; do
    cat "$MEOW_HOME"/tasks/*/attempt-1.stdout.log 2>/dev/null | grep "^$name " || true
done
meow exit
