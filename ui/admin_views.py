"""What the Admin tab draws from the studio's results: the job's progress bar, the job history, two lists side by side.

Pure functions from typed results to HTML or table rows (no model, no database), so each is tested on its own.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ui.render import esc

JOB_HEADERS = ["job", "started", "started by", "state", "duration", "candidate", "gate / error"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def job_html(status, now: float | None = None) -> str:
    """The fine-tune's state (a :class:`studio.jobs.JobStatus`); while it runs, a bar with percent and the job's message.

    A native ``<progress>`` element: the browser draws it and reads it out (its value and label) without any
    script, and its ``value`` is what a test reads.
    """
    now = time.time() if now is None else now
    if status.state == "idle":
        return "No fine-tune has run since the app started."
    job = f"job {esc(status.job_id)}"
    if status.running:
        percent = max(0, min(100, round(100 * status.fraction)))
        message = esc(status.message or "starting")
        return (f'<div class="finetune-progress"><p><strong>Running</strong> ({job}, started by '
                f"{esc(status.started_by)}, {now - status.started_at:.0f} s)</p>"
                f'<label>{percent}% · {message}<br><progress value="{percent}" max="100" '
                f'style="width:100%;height:1.2em" aria-label="fine-tune progress">{percent}%</progress></label></div>')
    if status.state == "failed":
        return f"<p><strong>Failed</strong> ({job}, {status.seconds:.0f} s): {esc(status.error[-600:])}</p>"
    return (f"<p><strong>Finished</strong> ({job}, {status.seconds:.0f} s): candidate <code>{esc(status.version or '')}"
            f"</code> — {esc(status.message)}; gate: {esc(status.gate_reason)}</p>")


def job_rows(records: Sequence[Any]) -> list[list[str]]:
    """The job history table (:class:`studio.jobs.JobRecord` rows, newest first)."""
    rows = []
    for r in records:
        if r.state == "done":
            verdict = ("passed" if r.gate_passed else "rejected") + (f": {r.gate_reason}" if r.gate_reason else "")
        else:
            verdict = r.error[-300:]
        rows.append([r.job_id, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at)), r.started_by,
                     r.state, _duration(r.seconds), r.version or "", verdict])
    return rows


def job_api(records: Sequence[Any]) -> list[dict]:
    return [{"job_id": r.job_id, "started_at": r.started_at, "started_by": r.started_by, "campaign": r.campaign,
             "state": r.state, "seconds": None if r.seconds is None else round(r.seconds, 2), "version": r.version,
             "gate_passed": r.gate_passed, "gate_reason": r.gate_reason, "error": r.error} for r in records]


def _column(label: str, result, other: dict[str, int]) -> str:
    rows = []
    for rec in result.items:
        both = rec.item_id in other
        mark = f'<span title="also #{other[rec.item_id]} in the other list">● #{other[rec.item_id]}</span>' if both else ""
        style = ' style="background:rgba(80,160,255,0.18)"' if both else ""
        rows.append(f"<tr{style}><td>{rec.rank}</td><td>{esc(rec.title)} "
                    f"<small>({esc(rec.item_id)})</small></td><td style=\"text-align:right\">{rec.score:.4f}</td>"
                    f"<td>{mark}</td></tr>")
    served = " · served now" if result.active else ""
    return (f'<div style="flex:1;min-width:260px"><h4>{esc(label)}: <code>{esc(result.model_version)}</code> '
            f"<small>({esc(result.model_kind)}{served})</small></h4>"
            '<table style="width:100%"><thead><tr><th>#</th><th>item</th><th>score</th><th>in both</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def comparison_html(a, b, liked_titles: Sequence[str]) -> str:
    """Two :class:`recsys_core.service.ModelRecommendations` for one profile, next to each other; items in both
    lists are shaded and marked with their rank in the other list."""
    ranks_a = {r.item_id: r.rank for r in a.items}
    ranks_b = {r.item_id: r.rank for r in b.items}
    common = len(ranks_a.keys() & ranks_b.keys())
    scales = ""
    if a.model_kind != b.model_kind:
        scales = (" Scores are on different scales (zero-shot: cosine similarity, -1 to 1; fine-tuned: a logit), "
                  "so compare ranks across the two lists, not scores.")
    return (f"<p>For a profile of {len(liked_titles)} liked item(s): {esc(', '.join(liked_titles))}. "
            f"<strong>{common} of {max(len(a.items), len(b.items))}</strong> items are in both lists (shaded, ● with "
            f"their rank in the other list).{scales}</p>"
            '<div style="display:flex;gap:1.5em;flex-wrap:wrap">'
            f"{_column('A', a, ranks_b)}{_column('B', b, ranks_a)}</div>")
