"""Task declarations (one YAML per task) and the registry that reads them."""

from mentalglm.tasks.registry import CHINESE_MAIN_TASKS, all_tasks, get_task, list_tasks
from mentalglm.tasks.schema import Label, Screen, Split, Task, TaskType

__all__ = ["CHINESE_MAIN_TASKS", "Label", "Screen", "Split", "Task", "TaskType", "all_tasks", "get_task", "list_tasks"]
