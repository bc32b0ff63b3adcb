"""Stands in for a real step1 script: records that it ran, on which GPUs, and when."""
import os
import time

with open("ran.log", "a") as log:
    log.write(f"step1 {os.environ.get('MEOW_TASK_NAME')} "
              f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES')} {time.time():.3f}\n")
print("step1 done")
