"""Stands in for a real train script: records that it ran, on which GPUs, and when."""
import os
import time

with open("ran.log", "a") as log:
    log.write(f"train {os.environ.get('MEOW_TASK_NAME')} "
              f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES')} {time.time():.3f}\n")
print("train done")
