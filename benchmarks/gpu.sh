#!/usr/bin/env bash
# GPU benchmark of issue #22: lorakit (and sd-scripts, when a checkout is given) on one GPU.
#
#   benchmarks/gpu.sh [SD_SCRIPTS_CHECKOUT]
#
# SD1.5 512 px batch 4 and SDXL 1024 px batch 1 LoRA training (dim 32 / alpha 16, AdamW, SDPA,
# cached latents), each in fp16 and bf16 autocast, and SDXL with the 12 GB preset (bf16, gradient
# checkpointing, cached text encoder outputs, U-Net only, Adafactor). Random-weight full-size
# models are written on the machine (SD1.5 2 GB, SDXL 6.9 GB, a few minutes on the CPU). Reports
# it/s, peak CUDA memory (torch's allocated peak, read at every optimizer step) and model-FLOP
# utilisation (3x the U-Net's forward FLOPs, counted on the meta device, over the device's dense
# fp16/bf16 peak). One run per trainer and config, 10 steps each; about 6-8 minutes on an H100
# class GPU without sd-scripts, twice that with it (run fewer configs with CONFIGS=...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
# dense fp16/bf16 tensor peaks (TFLOP/s), from the vendors' data sheets; PEAK_TFLOPS overrides
case "$NAME" in
  *H200*|*H100*SXM*|*"H100 80GB HBM3"*) PEAK=989 ;;
  *H100*) PEAK=756 ;;
  *A100*) PEAK=312 ;;
  *L40S*) PEAK=362 ;;
  *L4*) PEAK=121 ;;
  *A10G*|*A10*) PEAK=125 ;;
  *4090*) PEAK=165 ;;
  *3090*) PEAK=71 ;;
  *T4*) PEAK=65 ;;
  *) PEAK=0 ;;
esac
PEAK=${PEAK_TFLOPS:-$PEAK}
CONFIGS=${CONFIGS:-gpu_sd15_fp16,gpu_sd15_bf16,gpu_sdxl_fp16,gpu_sdxl_bf16,gpu_sdxl_12gb}
ARGS=(--configs "$CONFIGS" --runs "${RUNS:-1}" --steps "${STEPS:-10}" --work "${WORK:-benchmarks/out/gpu}")
[ "$PEAK" != 0 ] && ARGS+=(--peak-tflops "$PEAK")
[ $# -ge 1 ] && ARGS+=(--sd-scripts "$1")
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" benchmarks/vs_sd_scripts.py "${ARGS[@]}"
