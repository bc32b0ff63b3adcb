"""Pure text formatting for the CLI. Golden-tested; no I/O, no clock (callers pass `now`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from meowd.core.units import format_mib

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and re cost the CLI's fast path start-up time
    from typing import Any


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


def compact_reply(reply: Any, recent: bool) -> dict[str, Any]:
    """A `list` reply as columns and rows. A meowd from before them (still running after
    an upgrade) answers with a map per task, and every task: bounded here instead."""
    if isinstance(reply, dict):
        return reply
    from meowd.core.listing import bounded

    tasks = sorted(reply, key=lambda t: t["id"])
    omitted = {"waiting": 0, "finished": 0}
    if recent:
        tasks, omitted = bounded(tasks, list_facts)
    return {"columns": list(tasks[0]) if tasks else [],
            "rows": [list(t.values()) for t in tasks], "total": len(reply),
            "omitted": omitted, "degraded": None}


def task_maps(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of a compact `list` reply (columns and rows) as maps, in id order."""
    columns = reply["columns"]
    tasks = [dict(zip(columns, row)) for row in reply["rows"]]  # noqa: B905 (as many)
    tasks.sort(key=lambda t: t["id"])  # already in order, as a rule: one pass
    return tasks


MSGSPEC_FROM = 2000
"""Tasks from which `meow list --json` encodes with msgspec: ~8x json's speed, which
100,000 tasks (87 MB) need, but its import costs ~25 ms, more than json takes for a
queue of hundreds."""


def _write_json(value: Any, out: Any) -> None:
    import json  # the same compact JSON msgspec writes (no spaces, UTF-8)

    out.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    out.flush()


def write_json_tasks(tasks: list[dict[str, Any]], out: Any) -> None:
    """`meow list --json` to the binary stream `out`: the same JSON value as json.dumps,
    written without spaces."""
    from meowd.core.listjson import msgspec_or_none

    msgspec = msgspec_or_none() if len(tasks) >= MSGSPEC_FROM else None
    if msgspec is None:  # (without msgspec, json writes the same bytes, slower)
        _write_json(tasks, out)
        return

    out.write(msgspec.json.encode(tasks))
    out.write(b"\n")
    out.flush()


def write_json_reply(reply: dict[str, Any], out: Any) -> None:
    """`write_json_tasks` of a compact `list` reply, without a map per task: each row
    becomes a struct whose fields are the columns, which msgspec writes as an object."""
    from operator import itemgetter

    rows = reply["rows"]
    rows.sort(key=itemgetter(0))  # the id; already in order, as a rule: one pass
    if len(rows) < MSGSPEC_FROM:
        _write_json([dict(zip(reply["columns"], r)) for r in rows], out)  # noqa: B905
        return
    from meowd.core.listjson import encode_rows  # what meowd writes itself

    out.write(encode_rows(reply["columns"], rows))  # 80 MB at 100k: no copy
    out.write(b"\n")
    out.flush()


def list_facts(task: dict[str, Any]) -> tuple[int, str, int, float, float | None]:
    """What meowd.core.listing.bounded needs of a listed task."""
    return task["id"], task["status"], task["priority"], task["created_at"], task["ended_at"]


def render_tasks(tasks: list[dict[str, Any]], now: float) -> str:
    if not tasks:
        return "no tasks"
    rows = []
    for t in sorted(tasks, key=lambda t: t["id"]):
        gpus = ",".join(map(str, t["devices"])) if t["devices"] else (
            "-" if t["min_devices"] == 0 or t["status"] != "running" else "")
        if t["status"] == "waiting":
            gpus = f"({t['min_devices']})" if t["min_devices"] else "-"
        end = t["ended_at"] if t["ended_at"] is not None else now
        runtime = format_duration(end - t["started_at"]) if t["started_at"] else "-"
        rows.append([
            str(t["id"]), t["fullname"], t["status"], str(t["priority"]), gpus or "-",
            format_mib(t["requires_memory_per_device"]) if t["min_devices"] else "-",
            _peak_gpu(t), "-" if t["exit_code"] is None else str(t["exit_code"]),
            format_time(t["created_at"]), runtime, _note(t),
        ])
    return _table(["ID", "NAME", "STATUS", "PRI", "GPUS", "MEM/GPU", "PEAK", "EXIT", "CREATED",
                   "RUNTIME", "NOTE"], rows)


def _peak_gpu(task: dict[str, Any]) -> str:
    """The most GPU memory the task (or an attempt) held on any one of its GPUs."""
    peaks = (task.get("usage") or {}).get("gpu_peak_mib") or {}
    return format_mib(max(peaks.values())) if peaks else "-"


def _note(task: dict[str, Any], width: int = 48) -> str:
    waiting = task["status"] == "waiting"
    note = task.get("warning") or (task.get("why") or task["reason"] if waiting else "") or ""
    return note if len(note) <= width else note[: width - 3] + "..."


def render_attrs(tasks: list[dict[str, Any]], attrs: Sequence[str]) -> str:
    """`meow list ATTR...`: the fullname and the asked attributes; "-" where missing."""
    if not tasks:
        return "no tasks"

    def cell(value: Any) -> str:
        if value is None or value == [] or value == {}:
            return "-"
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)

    rows = [[t["fullname"], *(cell(t.get(a)) for a in attrs)] for t in tasks]
    return _table(["FULLNAME", *(a.upper() for a in attrs)], rows)


def compact_names(names: Sequence[str]) -> str:
    """`g/a`, `g/b`, `x` -> `g/{a, b}, x`: Cattino's path-tree printing, one level deep."""
    groups: dict[str, list[str]] = {}
    for name in names:
        head, _, leaf = name.rpartition("/")
        groups.setdefault(head, []).append(leaf)
    parts = []
    for head, leaves in groups.items():
        if not head:
            parts.extend(leaves)
        elif len(leaves) == 1:
            parts.append(f"{head}/{leaves[0]}")
        else:
            parts.append(f"{head}/{{{', '.join(leaves)}}}")
    return ", ".join(parts)


def render_devices(result: dict[str, Any]) -> str:
    if result["backend"] is None:
        return result["hint"]
    rows = [
        [
            str(d["index"]), d["name"], str(d["total_mib"]), str(d["used_by_meow_mib"]),
            str(d["used_by_others_mib"]), str(d["reserved_mib"]), str(d["free_mib"]),
            "-" if d["utilization"] is None else f"{d['utilization']}%",
            ",".join(d["tasks"]) or "-",
        ]
        for d in result["devices"]
    ]
    header = f"{len(rows)} GPU(s) via {result['backend']}; memory in MiB"
    table = _table(["GPU", "NAME", "TOTAL", "MEOW", "OTHERS", "RESERVED", "FREE", "UTIL", "TASKS"],
                   rows)
    claims = [f"GPU {d['index']}: {o['mib']} MiB reserved by "
              f"{'another meow home of yours' if o.get('same_user') else o['user']} since "
              f"{format_time(o['since'])}"
              for d in result["devices"] for o in d.get("others") or ()]
    return "\n".join([header, table, *(["other queues' reservations:", *(
        f"  {line}" for line in claims)] if claims else [])])


_PAST = {"kill": "killed", "cancel": "cancelled", "resume": "resumed", "remove": "removed",
         "retry": "requeued"}
_ENDED = ("failed", "killed", "lost", "timeout")


def _retry_hint(op: str, no_op: list[str]) -> str:
    """After `meow resume` of tasks that ended: the command that runs them again."""
    ended = []
    for line in no_op if op == "resume" else ():
        name, sep, status = line.rpartition(": not cancelled (")
        if sep and name and status.endswith(")") and status[:-1] in _ENDED:
            ended.append(name)
    if not ended:
        return ""
    if len(ended) == 1:
        return f"; to run it again: meow retry {ended[0]}"
    return "\nto run a task that ended again: meow retry NAME"


def render_bulk(op: str, result: dict[str, Any]) -> tuple[str, str]:
    """(report for stdout, failures for stderr) of a kill/cancel/resume/remove."""
    lines = []
    if result["success"]:
        lines.append(f"{_PAST[op]}: {compact_names(result['success'])}")
    if result["no_op"]:
        lines.append(f"unchanged: {'; '.join(result['no_op'])}"
                     + _retry_hint(op, result["no_op"]))
    if not lines and not result["failure"]:
        lines.append("no tasks matched")
    failures = [f"meow: error: {op} {name}: {reason}" for name, reason in result["failure"]]
    return "\n".join(lines), "\n".join(failures)


def _status_line(task: dict[str, Any], now: float) -> str:
    status = task["status"]
    if status == "waiting":
        why = task.get("why") or task.get("reason")
        return f"waiting ({format_duration(now - task['created_at'])} so far)" + (
            f": {why}" if why else "")
    if status == "running":
        return "running" + (f" ({task['reason']})" if task.get("reason") else "")
    return status + (f" ({task['reason']})" if task.get("reason") else "")


def _runtime(task: dict[str, Any], now: float) -> str:
    if not task.get("started_at"):
        return "-"
    if task["ended_at"] is not None:
        return format_duration(task["ended_at"] - task["started_at"])
    return f"{format_duration(now - task['started_at'])} so far"


def render_show(task: dict[str, Any], now: float) -> str:
    gpus = (f"{task['min_devices']} x {format_mib(task['requires_memory_per_device'])}"
            + (f" on {','.join(map(str, task['devices']))}" if task["devices"] else "")
            if task["min_devices"] else "none (-c 0: runs without a GPU)")
    lines = [
        f"task {task['id']}: {task['fullname']}",
        f"  status      {_status_line(task, now)}",
        f"  command     {task['command']}",
        f"  cwd         {task['cwd']}",
        f"  priority    {task['priority']}",
        f"  gpus        {gpus}",
        f"  exit code   {'-' if task['exit_code'] is None else task['exit_code']}",
        f"  created     {format_time(task['created_at'])}",
        f"  started     {format_time(task['started_at'])}"
        + (f" (waited {format_duration(task['started_at'] - task['created_at'])})"
           if task["started_at"] else ""),
        f"  ended       {format_time(task['ended_at'])}",
        f"  runtime     {_runtime(task, now)}",
        f"  pid         {task.get('pid') or '-'}",
        "  reserved    " + (", ".join(
            f"GPU {i}: {format_mib(m)}" for i, m in zip(task["devices"], task["reserved_mib"],
                                                        strict=False)) or "-"),
        *_usage_lines(task),
        *([f"  depends on  {', '.join(task['depends_on_names'])}"]
          if task.get("depends_on_names") else []),
        *([f"  warning     {task['warning']}"] if task.get("warning") else []),
        f"  task home   {task['task_home']}",
        f"  env keys    {len(task['env_keys'])} ({', '.join(task['env_keys'][:8])}"
        + (", ..." if len(task["env_keys"]) > 8 else "") + ")",
    ]
    lines += _lifecycle_lines(task, now)
    if task["attempt_list"]:
        lines.append("  attempts")
        lines.append("    " + _table(
            ("N", "STARTED", "RUNTIME", "EXIT", "REASON", "GPUS", "MEM", "PEAK"),
            [(str(a["n"]), format_time(a["started_at"]),
              format_duration((a["ended_at"] or now) - a["started_at"]),
              "-" if a["exit_code"] is None else str(a["exit_code"]),
              a.get("end_reason") or ("running" if a["ended_at"] is None else "-"),
              ",".join(map(str, a["devices"])) or "-",
              format_mib(a["memory"]) if a.get("memory") is not None else "-",
              _peak_gpu(a))
             for a in task["attempt_list"]]).replace("\n", "\n    "))
        for a in task["attempt_list"]:
            lines.append(f"    {a['n']}: {a['stdout']}")
            lines.append(f"    {a['n']}: {a['stderr']}")
            if a.get("reason"):
                lines.append(f"    {a['n']}: {a['reason']}")
    history = task.get("history") or []
    if history:
        lines.append("  history     " + "; ".join(
            f"{format_time(e['ts'])} {e['kind']}" for e in history[-12:]))
    return "\n".join(lines)


def _lifecycle_lines(task: dict[str, Any], now: float) -> list[str]:
    """Time limit, retries and where it runs, where they apply."""
    lines = []
    if task.get("time_limit"):
        left = ""
        if task.get("deadline") and task["status"] == "running":
            left = f" ({format_duration(max(0.0, task['deadline'] - now))} left)"
        lines.append(f"  time limit  {format_duration(task['time_limit'])}{left}"
                     + ("; resumable" if task.get("resumable") else ""))
    if task.get("estimate"):
        lines.append(f"  estimate    {task['estimate']}")
    if task.get("max_retries"):
        lines.append(f"  retries     {task.get('retries_used', 0)} of {task['max_retries']} used")
    if task.get("end_reason") and task["status"] not in ("waiting", "running"):
        lines.append(f"  ended by    {task['end_reason']}")
    if task.get("executor", "local") != "local":
        info = task.get("executor_info") or {}
        lines.append(f"  executor    {task['executor']}" + "".join(
            f", {k} {v}" for k, v in info.items() if v))
    return lines


def _usage_lines(task: dict[str, Any]) -> list[str]:
    """Live memory only while the task runs; peaks always."""
    u = task.get("usage") or {}
    gpu = u.get("gpu_mib") or {}
    peak = u.get("gpu_peak_mib") or {}
    live = task["status"] == "running"
    lines = []
    if gpu or peak:
        lines.append("  gpu memory  " + ", ".join(
            f"GPU {i}: " + (f"{format_mib(gpu.get(i, 0))} now, " if live else "")
            + f"peak {format_mib(p)}"
            for i, p in sorted(peak.items(), key=lambda kv: int(kv[0]))))
    if u.get("rss_peak_mib") or u.get("cpu_seconds"):
        now = f"RSS {format_mib(u.get('rss_mib', 0))} now, peak " if live else "peak RSS "
        lines.append(f"  host        {now}{format_mib(u.get('rss_peak_mib', 0))}; CPU "
                     f"{u.get('cpu_seconds', 0.0):.1f} s")
    return lines


def collapse_progress(text: str) -> str:
    """Keep only the last state of carriage-return progress bars (tqdm)."""
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line
                     for line in text.split("\n"))


def render_usage(result: dict[str, Any]) -> str:
    """`meow usage NAME`: per attempt, runtime, peak RSS, CPU time, peak GPU memory."""
    rows = [(str(a["attempt"]), format_duration(a["runtime_s"]),
             a["end_reason"] or ("running" if a["ended_at"] is None else "-"),
             "-" if a["exit_code"] is None else str(a["exit_code"]),
             format_mib(a["rss_peak_mib"]), f"{a['cpu_seconds']:.1f}",
             ", ".join(f"GPU {i}: {format_mib(m)}" for i, m in
                       sorted(a["gpu_peak_mib"].items(), key=lambda kv: int(kv[0]))) or "-")
            for a in result["attempts"]]
    if not rows:
        return f"{result['fullname']}: no attempt yet"
    return f"{result['fullname']}\n" + _table(
        ("ATTEMPT", "RUNTIME", "REASON", "EXIT", "PEAK RSS", "CPU S", "PEAK GPU MEMORY"), rows)
