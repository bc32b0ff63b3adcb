from cattino.tasks import ProcTask

task = ProcTask(
	"python -c \"print('hello world')\"",
	task_name="hello",
	min_devices=1,
	requires_memory_per_device=1000,
)

if __name__ == "__main__":
	# For local testing you may want to dispatch/run the task via the API
	import cattino
	cattino.export(task)
