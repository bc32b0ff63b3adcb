"""Real NVML: skipped on machines without an NVIDIA GPU."""

import os
import subprocess
import tempfile
import time

import pytest

from tests.conftest import MeowEnv

pynvml = pytest.importorskip("pynvml")
try:
    pynvml.nvmlInit()
    HAVE_GPU = pynvml.nvmlDeviceGetCount() > 0
except Exception:
    HAVE_GPU = False

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no NVIDIA GPU/NVML")]


def test_backend_reports_every_gpu():
    from meowd.devices.nvml import NvmlBackend

    backend = NvmlBackend.open()
    assert backend is not None
    devices = backend.snapshot()
    assert len(devices) == pynvml.nvmlDeviceGetCount()
    for d in devices:
        assert d.total_mib > 0 and 0 <= d.used_mib <= d.total_mib
        assert d.name
    backend.close()


def test_daemon_places_a_task_on_a_real_gpu():
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="meow-gpu-"))
    env = MeowEnv(home, fake_gpus=None)
    env.start()
    try:
        out = home / "cvd"
        env.meow("create", f"echo $CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER > {out}; nvidia-smi -L"
                 f" >> {out} 2>&1 || true", "-n", "real", "-M", "1000")
        task = env.wait_status("real", "done", "failed", timeout=30)
        assert task["status"] == "done"
        first = out.read_text().split("\n")[0].split()
        assert first == [str(task["devices"][0]), "PCI_BUS_ID"]
        devices = env.client().devices()
        assert devices["backend"] == "nvml" and devices["devices"]
        print(env.meow("devices").stdout)
    finally:
        env.meow("exit", "--kill", check=False)
        env.stop()


def test_gpu_memory_of_a_task_is_attributed_to_it():
    """A task that allocates GPU memory shows up as meow usage, not as another user's."""
    torch_ok = subprocess.run(["python3", "-c", "import torch; assert torch.cuda.is_available()"],
                              capture_output=True).returncode == 0
    if not torch_ok:
        pytest.skip("no CUDA-enabled torch to allocate memory with")
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="meow-gpu-"))
    env = MeowEnv(home, fake_gpus=None)
    env.start()
    try:
        env.meow("create", "python3 -c 'import torch,time; x=torch.empty(2**30, dtype=torch.uint8,"
                 " device=\"cuda\"); time.sleep(20)'", "-n", "alloc", "-M", "4000",
                 cwd=os.getcwd())
        env.wait_status("alloc", "running")
        deadline = time.time() + 20
        used = 0
        while time.time() < deadline and used < 1000:
            d = env.client().devices()["devices"]
            used = sum(x["used_by_meow_mib"] for x in d)
            time.sleep(0.5)
        assert used >= 1000
    finally:
        env.meow("exit", "--kill", check=False)
        env.stop()
