from cattino.tasks import ProcTask, TaskGroup

train = ProcTask(
	"python train.py",
	task_name="train",
	min_devices=2,
	requires_memory_per_device=20000,
)

eval = ProcTask(
	"python eval.py",
	task_name="eval",
	min_devices=1,
	requires_memory_per_device=20000,
)

group = TaskGroup([train, eval], execute_strategy="sequential", group_name="pipeline")

import cattino
cattino.export(group)
