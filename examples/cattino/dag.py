from cattino.tasks import ProcTask, TaskGraph, TaskGroup

t1 = ProcTask("python step1.py", task_name="step1")
t2 = ProcTask("python step2.py", task_name="step2")
t3 = ProcTask("python step3.py", task_name="step3")

g = TaskGraph()
g.add_tasks_from([t1, t2, t3])
g.add_edges_from([(t1, t2), (t2, t3)])

group = TaskGroup(tasks=t1, execute_strategy=g)
import cattino
cattino.export(group)
