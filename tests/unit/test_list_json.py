"""`meow list --json` writes the same JSON with json (small queues: msgspec's import costs
more than it saves) and with msgspec (large ones)."""

from __future__ import annotations

import io
import json

from meowcli import render


def _reply(n: int) -> dict:
    columns = ["id", "name", "status", "devices", "usage", "exit_code", "created_at", "why"]
    rows = [[i, f"t{i}-é✓", "waiting", [0, 1], {"gpu_peak_mib": {"0": 12.5}}, None,
             1795648363.1309443 + i, 'quote " and \\ and \n and \x01'] for i in range(n, 0, -1)]
    return {"columns": columns, "rows": rows}


def _written(write, value) -> bytes:
    out = io.BytesIO()
    write(value, out)
    return out.getvalue()


def test_both_encoders_write_the_same_json():
    small, large = _reply(10), _reply(render.MSGSPEC_FROM + 5)
    for reply in (small, large):
        rows = sorted(reply["rows"], key=lambda r: r[0])
        expected = [dict(zip(reply["columns"], r, strict=True)) for r in rows]
        written = _written(render.write_json_reply, {**reply, "rows": list(reply["rows"])})
        assert json.loads(written) == expected
        assert written.endswith(b"\n") and b", " not in written[:200]
        assert json.loads(_written(render.write_json_tasks, expected)) == expected
    # The two encoders agree byte for byte on the same rows.
    rows = sorted(large["rows"], key=lambda r: r[0])[:50]
    maps = [dict(zip(large["columns"], r, strict=True)) for r in rows]
    import msgspec

    assert _written(render._write_json, maps) == msgspec.json.encode(maps) + b"\n"


def test_without_msgspec_the_same_bytes_come_out(monkeypatch):
    """msgspec speeds `list --json` up; a Python with only meow's core dependencies
    (no msgspec) writes the same bytes with json, kept rows spliced in alike."""
    from meowd.core import listjson

    reply = _reply(render.MSGSPEC_FROM + 5)
    columns, rows = reply["columns"], sorted(reply["rows"], key=lambda r: r[0])
    fast = listjson.encode_rows(columns, rows)
    kept = listjson.encode_row(columns, rows[3])
    mixed = listjson.encode_mixed(columns, [*rows[:3], kept, *rows[4:]])
    maps = [dict(zip(columns, r, strict=True)) for r in rows]
    tasks = _written(render.write_json_tasks, maps)
    monkeypatch.setattr(listjson, "_msgspec_module", None)  # as where it is not installed
    assert listjson.encode_rows(columns, rows) == fast == mixed
    assert listjson.encode_mixed(columns, [*rows[:3], kept, *rows[4:]]) == fast
    assert listjson.encode_row(columns, rows[3]) == kept
    assert _written(render.write_json_tasks, maps) == tasks == fast + b"\n"
