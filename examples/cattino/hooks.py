from cattino.tasks import ProcTask


class MyTask(ProcTask):
	async def on_start(self):
		await super().on_start()
		print(f"Task {self.name} starting")

	async def on_end(self):
		await super().on_end()
		print(f"Task {self.name} finished")


import cattino
cattino.export(MyTask("python train.py", task_name="hooked"))
