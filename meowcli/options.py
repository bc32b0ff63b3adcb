"""`meow create`'s options, in one table: the fast parser (meowcli/create.py) reads them
from here, and so does the typer command (meowcli/app.py) for its flags, help, metavars
and defaults. tests/cli/test_create_options.py checks that both parse a table of
command lines the same way.

Plain tuples and one small class: this module is imported on `meow create`'s fast path,
where typing and dataclasses would cost start-up time.
"""

from __future__ import annotations


class Opt:
    __slots__ = ("default", "dest", "effective", "flags", "help", "kind", "metavar")

    def __init__(self, dest: str, flags: tuple[str, ...], kind: str, help: str,
                 metavar: str | None = None, effective: object = None) -> None:
        self.dest = dest
        self.flags = flags
        self.kind = kind
        """value (one string, converted by create_args), flag (no value), list (repeatable),
        float (one number, as typer's FLOAT)"""
        self.default = False if kind == "flag" else [] if kind == "list" else None
        """What the parser stores when the option is not given (None: "not given")."""
        self.effective = effective
        """The value a task gets when the option is not given (and no task file sets it)."""
        self.help = help
        self.metavar = metavar

    @property
    def help_text(self) -> str:
        if self.effective is None or self.kind == "flag":
            return self.help
        return f"{self.help} [default: {self.effective}, or the task file's]"


CREATE_OPTIONS = (
    Opt("task_name", ("-n", "--task-name"), "value", metavar="NAME",
        help="Task name (default: 5 random characters). With several tasks (multirun, task "
             "file): NAME_1, NAME_2..."),
    Opt("priority", ("-p", "--priority"), "value", metavar="N", effective=0,
        help="Higher starts first; equal priority: older first."),
    Opt("requires_memory_per_device", ("-M", "--requires-memory-per-device"), "value",
        metavar="MEM", effective=0,
        help="GPU memory per GPU: MiB (20000) or with a unit (20GiB), or a ratio in (0,1] of "
             "each GPU's total (0.5). Plain numbers are MiB: -M 2 is 2 MiB, not 2 GiB (meow "
             "warns under 256). 0: any GPU, nothing reserved."),
    Opt("min_devices", ("-c", "--min-devices"), "value", metavar="N", effective=1,
        help="GPUs the task needs; 0 runs it without a GPU."),
    Opt("multirun", ("-m", "--multirun"), "flag",
        help="Expand [a,b] and key=[a,b] arguments after -- into one task (or one run of the "
             "task file) per combination."),
    Opt("as_group", ("-g", "--as-group"), "value", metavar="GROUP",
        help="Put every created task in this group (fullnames GROUP/name)."),
    Opt("cwd", ("--cwd",), "value", metavar="DIR",
        help="Working directory (default: the current one)."),
    Opt("enforce_memory", ("--enforce-memory",), "flag",
        help="Stop the task (failed) if it uses more GPU memory than -M; without it, meow "
             "only warns."),
    Opt("secrets", ("--secret",), "list", metavar="NAME[=VALUE]",
        help="An environment value the task gets but meow never shows or logs (***). "
             "Repeatable."),
    Opt("time_limit", ("--time-limit",), "value", metavar="DURATION",
        help="Stop an attempt after this long (90s, 30m, 2h, 1d2h): SIGTERM, then SIGKILL "
             "after kill_grace; it ends as timeout. The task sees MEOW_DEADLINE."),
    Opt("max_retries", ("--retries",), "value", metavar="N", effective=0,
        help="Run a failed attempt again, up to N times (a GPU out-of-memory retry asks "
             "oom_scale more memory)."),
    Opt("resumable", ("--resumable",), "flag",
        help="On timeout, queue the task again (its run directory kept), within its "
             "retries (at least 3)."),
    Opt("after", ("--after",), "list", metavar="NAME[,NAME]",
        help="Start only once these tasks (names or ids) are done; if one fails, this one "
             "waits blocked (or is cancelled, with cascade_cancel_on_failure). Repeatable."),
    Opt("executor", ("--executor",), "value", metavar="local|slurm",
        help="Where to run: this machine's GPUs, or Slurm (sbatch) [default: the executor "
             "setting]."),
    Opt("json", ("--json",), "flag", help="Print JSON for scripts."),
    Opt("traceback", ("--traceback",), "flag",
        help="A task file that raises: print its traceback (your frames only), not one line."),
)

BY_DEST = {o.dest: o for o in CREATE_OPTIONS}
BY_FLAG = {flag: o for o in CREATE_OPTIONS for flag in o.flags}


# -- the frequent commands' options (meowcli/quick.py parses them without typer) ---------------
JSON = BY_DEST["json"]
ALL = Opt("all", ("-A", "--all"), "flag",
          help="NAME is a regular expression; without NAME, every task.")
FORCE = Opt("force", ("-f", "--force"), "flag", help="SIGKILL instead of SIGTERM.")
WAIT_ALL = Opt("all", ("-A", "--all"), "flag", help="Wait for every task.")
TIMEOUT = Opt("timeout", ("--timeout",), "float", metavar="SECONDS",
              help="Give up after this long (exit 124).")
LIST_ALL = Opt("all", ("--all",), "flag",
               help="Every task in the table, not the bounded view (--json always lists "
                    "every task).")
STREAM = Opt("stream", ("-s", "--stream"), "value", metavar="stdout|stderr",
             help="Which output to follow.")

QUICK_OPTIONS: dict[str, tuple[Opt, ...]] = {
    "list": (LIST_ALL, JSON), "show": (JSON,), "test": (),
    "kill": (ALL, FORCE, JSON), "cancel": (ALL, JSON), "resume": (ALL, JSON),
    "retry": (ALL, JSON), "remove": (ALL, JSON),
    "wait": (WAIT_ALL, TIMEOUT, JSON), "watch": (STREAM,),
}
"""Per command, the options the quick path reads; the typer commands (meowcli/app.py) take
their flags and help from these rows. Any other option (`list --filter`) goes to typer;
tests/cli/test_quick.py checks that both read a table of command lines alike."""
