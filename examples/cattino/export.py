import cattino
from cattino.tasks import ProcTask

task = ProcTask("python train.py", task_name="train")
cattino.export(task)
