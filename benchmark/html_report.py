"""``leaderboard.html``: the leaderboard as one self-contained page (sortable columns, filters, per-class views).

The tables are the rows of :func:`benchmark.leaderboard.frame` (so a column added there appears here), one
table per :func:`benchmark.leaderboard.sections` entry, with the section texts of ``leaderboard.md`` (group
sizes, shared settings, legend). Plots are inlined as PNG data, styles and ~60 lines of vanilla JS are inline:
the page opens offline, from any folder. Each row links to its per-class table (in the page) and records.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import leaderboard as lb
from .fileio import atomic_write_text
from .paired import Interval
from .plots import _stem
from .record import RunRecord
from .reference import results_dir_of

__all__ = ["write_html", "page", "columns", "HIDDEN_COLUMNS"]

# frame columns the table does not show as cells: the table's title carries them, or the row's links do
HIDDEN_COLUMNS = ("dataset", "imbalance_factor", "teacher", "run_ids", "made_by", "kd_reference")


def write_html(rows: Sequence[lb.Row], deltas: Mapping[str, lb.Delta], records: Sequence[RunRecord],
               out: Path) -> Path:
    """Write ``<out>/leaderboard.html`` (atomically) and return its path."""
    path = Path(out) / "leaderboard.html"
    atomic_write_text(path, page(rows, deltas, records, Path(out)))
    return path


def columns(df) -> List[Tuple[str, Tuple[str, ...]]]:
    """The table's columns as (header, frame columns): ``X_mean``+``X_std`` -> ``X``; ``X`` (or ``X_vs_kd``) with
    ``X_lo``+``X_hi`` -> one interval column; ``n_*`` and :data:`HIDDEN_COLUMNS` left out."""
    names = list(df.columns)
    used, out = set(), []
    for c in names:
        if c in used or c in HIDDEN_COLUMNS or c.startswith("n_"):
            continue
        base = c[:-len("_mean")] if c.endswith("_mean") else None
        stem = c[:-len("_vs_kd")] if c.endswith("_vs_kd") else c
        if base is not None and f"{base}_std" in names:
            group: Tuple[str, ...] = (c, f"{base}_std")
            header = base
        elif f"{stem}_lo" in names and f"{stem}_hi" in names:
            group, header = (c, f"{stem}_lo", f"{stem}_hi"), c
        else:
            group, header = (c,), c
        used.update(group)
        out.append((header, group))
    return sorted(out, key=lambda col: col[0] != "method")  # the method first, then the frame's order


def _num(v: Any) -> Optional[float]:
    """A finite float, or None (NaN, pandas NA, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _cell(line: Mapping[str, Any], group: Tuple[str, ...], row: lb.Row, delta: lb.Delta) -> Tuple[str, str]:
    """(text, sort key) of one cell, formatted as ``leaderboard.md`` formats it."""
    nums = [_num(line.get(c)) for c in group]
    if len(group) == 2:
        return _mean_cell(*nums)
    if len(group) == 3:
        return _interval_cell(group[0], nums, row, delta)
    return _scalar_cell(line.get(group[0]), nums[0])


def _mean_cell(mean: Optional[float], std: Optional[float]) -> Tuple[str, str]:
    """``mean ± std`` (the Markdown's ``_fmt``), sorted by the mean."""
    text = lb._fmt(math.nan if mean is None else mean, math.nan if std is None else std)
    return text, "" if mean is None else repr(mean)


def _interval_cell(column: str, nums: Sequence[Optional[float]], row: lb.Row, delta: lb.Delta) -> Tuple[str, str]:
    """A value with its interval: a Δ vs kd as the Markdown writes it (``ref``, ``—``, ``*``), else ``v [lo, hi]``."""
    metric = column[len("delta_"):-len("_vs_kd")] if column.startswith("delta_") and column.endswith("_vs_kd") else None
    if None in nums:
        return (delta.text(metric, row) if metric in ("overall", "tail") else "—"), ""
    text = Interval(*nums).format() if metric else f"{nums[0]:g} [{nums[1]:g}, {nums[2]:g}]"
    return text, repr(nums[0])


def _scalar_cell(value: Any, num: Optional[float]) -> Tuple[str, str]:
    """A number (2 decimals unless whole) or a text, sorted as such."""
    if num is not None and not isinstance(value, bool):
        return (f"{num:.2f}" if not float(num).is_integer() else f"{num:g}"), repr(num)
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text, text.lower()


def _inline(text: str) -> str:
    """The Markdown the leaderboard uses in its prose: `code` and **bold**, HTML-escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _prose(lines: Sequence[str]) -> str:
    """Markdown paragraphs and ``- `` lists (the leaderboard's own lines) as HTML."""
    parts, items = [], []
    for line in list(lines) + [""]:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            parts.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip() and not line.startswith("#"):
            parts.append(f"<p>{_inline(line)}</p>")
    return "\n".join(parts)


def _rel(target: Path, out: Path) -> str:
    """A link from ``out/leaderboard.html`` to ``target`` (relative, so the folder can move)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(out).resolve())).as_posix()


def _record_links(row: lb.Row, out: Path) -> str:
    """One link per seed to the run's record JSON (in this folder, or in the reference folder)."""
    links = []
    for rec in row.records:
        href = _rel(results_dir_of(rec, out) / "runs" / f"{rec.run_id}.json", out)
        links.append(f'<a class="record" href="{html.escape(href)}" title="{html.escape(rec.run_id)}">'
                     f's{html.escape(str(rec.seed))}</a>')
    return " ".join(links)


def _anchor(row: lb.Row) -> str:
    """The id of a row's per-class view in the page."""
    return f"pc-{row.label}"


def _row_html(line: Mapping[str, Any], cols, row: lb.Row, delta: lb.Delta, out: Path) -> str:
    """One ``<tr>``: data attributes for the filters, a sortable cell per column, per-class and record links."""
    attrs = {"data-" + k: v for k, v in _facets(row).items()}
    attrs["data-label"] = row.label
    cells = []
    for header, group in cols:
        text, key = _cell(line, group, row, delta)
        kind = "method" if header == "method" else ("num" if key and _num(key) is not None else "")
        body = _method_html(row, line) if header == "method" else html.escape(text)
        cells.append(f'<td data-sort="{html.escape(key)}"' + (f' class="{kind}"' if kind else "") + f">{body}</td>")
    cells.append(f'<td class="links"><a class="per-class" href="#{_anchor(row)}">per-class</a> '
                 f"{_record_links(row, out)}</td>")
    data = " ".join(f'{k}="{html.escape(str(v))}"' for k, v in attrs.items())
    cls = " ".join((["reference"] if row.is_reference else []) + (["teacher"] if row.is_teacher else []))
    title = f' title="made by {html.escape(str(line.get("made_by")))}"' if row.is_reference else ""
    return f'<tr {data} class="{cls}"{title}>' + "".join(cells) + "</tr>"


def _method_html(row: lb.Row, line: Mapping[str, Any]) -> str:
    """The method cell: the name, and for a reference row a ``(ref)`` badge saying which code and machine made it."""
    mark = "" if getattr(row, "verified", True) else getattr(lb, "UNVERIFIED_MARK", "")  # as leaderboard.md marks it
    if not row.is_reference:
        return html.escape(row.name + mark)
    return (f'{html.escape(row.name)} <span class="badge" title="{html.escape(str(line.get("made_by")))}">(ref)'
            f"</span>{html.escape(mark)}")


def _facets(row: lb.Row) -> Dict[str, str]:
    """What the filters match a row on: dataset, imbalance factor, pair, method."""
    dataset, imb, teacher = row.section
    return {"dataset": dataset, "if": "" if imb is None else f"{imb:g}",
            "pair": f"{teacher} (teacher)" if row.is_teacher else f"{teacher} → {row.student}", "method": row.name}


def _per_class_html(row: lb.Row, plot_id: str) -> str:
    """A collapsed table of the row's per-class accuracy (mean ± std over seeds) beside each class's training count."""
    mean, std = row.per_class()
    counts = row.class_counts
    body = "".join(f"<tr><td>{c}</td><td>{counts[c] if c < len(counts) else ''}</td>"
                   f"<td>{lb._fmt(float(mean[c]), float(std[c]) if len(row.records) > 1 else math.nan)}</td></tr>"
                   for c in range(len(mean)))  # per_class_acc is in % in the records
    return (f'<details class="per-class-view" id="{_anchor(row)}"><summary>per-class accuracy: '
            f'{html.escape(row.display_name)} <code>{row.label}</code></summary><table class="pc"><thead><tr>'
            f"<th>class</th><th>training images</th><th>test accuracy (%)</th></tr></thead><tbody>{body}"
            f'</tbody></table><a href="#{plot_id}">per-class plot of this table</a></details>')


def _plots_html(part: Sequence[lb.Row], out: Path) -> str:
    """The table's plots (written by benchmark.plots), inlined as PNG data so the page needs no other file."""
    figs = []
    for kind in ("tail_vs_overall", "groups", "per_class"):
        path = Path(out) / "plots" / f"{_stem(part)}_{kind}.png"
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            figs.append(f'<figure id="plot-{_stem(part)}-{kind}"><img alt="{kind.replace("_", " ")} plot" '
                        f'src="data:image/png;base64,{data}"><figcaption>{kind.replace("_", " ")}</figcaption>'
                        "</figure>")
    return f'<div class="plots">{"".join(figs)}</div>' if figs else ""


def _section_html(part: Sequence[lb.Row], df, cols, deltas: Mapping[str, lb.Delta], out: Path) -> str:
    """One table of ``leaderboard.md``: title, group sizes, the rows, legend, plots, per-class views."""
    md = lb._section_lines(part, deltas)  # the Markdown's own section text (title, sizes, legend)
    lines = {str(r["settings"]): r for r in df.to_dict("records")}
    head = "".join(f'<th data-col="{html.escape(h)}" title="click to sort">{html.escape(h)}</th>' for h, _ in cols)
    body = "".join(_row_html(lines[r.label], cols, r, deltas.get(r.label, lb.Delta(None, None)), out) for r in part)
    prose = [ln for ln in md[1:] if not ln.startswith("|")]
    return (f'<section class="board"><h2>{_inline(md[0][3:])}</h2><table class="lb"><thead><tr>{head}'
            f"<th>links</th></tr></thead><tbody>{body}</tbody></table>{_prose(prose)}{_plots_html(part, out)}"
            + "".join(_per_class_html(r, f"plot-{_stem(part)}-per_class") for r in part) + "</section>")


def _filters(rows: Sequence[lb.Row]) -> str:
    """A select per filter (dataset, imbalance factor, pair, method), options from the rows."""
    def values(key: str) -> List[str]:
        return sorted({_facets(r)[key] for r in rows})

    out = []
    for key, name in (("dataset", "dataset"), ("if", "imbalance factor"), ("pair", "pair"), ("method", "method")):
        opts = "".join(f'<option value="{html.escape(v)}">{html.escape(v or "none")}</option>' for v in values(key))
        out.append(f'<label>{name} <select class="filter" data-key="{key}" id="filter-{key}">'
                   f'<option value="">all</option>{opts}</select></label>')
    return '<div class="filters">' + " ".join(out) + ' <span id="shown"></span></div>'


def page(rows: Sequence[lb.Row], deltas: Mapping[str, lb.Delta], records: Sequence[RunRecord],
         out: Path) -> str:
    """The whole HTML document (see the module docstring)."""
    df = lb.frame(rows, deltas)
    cols = columns(df)
    sections = "".join(_section_html(part, df, cols, deltas, out) for part in lb.sections(rows).values())
    intro = _prose(lb._header_lines(records))
    footer = _prose(lb._footer_lines(records))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ltkd-bench leaderboard</title>"
            f"<style>{_CSS}</style></head><body><h1>ltkd-bench leaderboard</h1>"
            f"{_filters(rows)}<details class=\"about\"><summary>How to read it</summary>{intro}</details>"
            f"{sections}<footer>{footer}</footer><script>{_JS}</script></body></html>\n")


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
table.lb{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{border:1px solid #ddd;padding:3px 7px;white-space:nowrap}
table.lb th{background:#f2f4f7;cursor:pointer;user-select:none}
table.lb th[aria-sort=ascending]::after{content:" \\25B2"}
table.lb th[aria-sort=descending]::after{content:" \\25BC"}
tr.reference td{background:#fbf6e6;color:#5a4a1a}
tr.teacher td.method{font-weight:bold}
.badge{font-size:11px;background:#c9a227;color:#fff;border-radius:3px;padding:0 4px;margin-left:3px}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1em}
.plots img{max-width:32%;margin-right:1%;vertical-align:top}
.plots figure{display:inline-block;margin:0;width:32%}.plots figure img{max-width:100%}
details.per-class-view{margin:.2em 0}table.pc td,table.pc th{padding:1px 8px;text-align:right}
:target{outline:2px solid #c9a227}
code{background:#f2f4f7;padding:0 3px;border-radius:3px}
"""

_JS = """
(function(){
function key(td){var v=td.getAttribute('data-sort');return td.classList.contains('num')?parseFloat(v):v;}
function cmp(a,b){return (typeof a==='number')?a-b:String(a).localeCompare(String(b));}
document.querySelectorAll('table.lb').forEach(function(t){
 t.querySelectorAll('th[data-col]').forEach(function(th,i){th.addEventListener('click',function(){
  var desc=th.getAttribute('aria-sort')!=='descending';
  t.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',desc?'descending':'ascending');
  var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(x,y){var a=key(x.cells[i]),b=key(y.cells[i]);
   if(a==='')return 1;if(b==='')return -1;var c=cmp(a,b);return desc?-c:c;});
  rows.forEach(function(r){body.appendChild(r);});});});});
function applyFilters(){var sel={};document.querySelectorAll('select.filter').forEach(function(s){sel[s.getAttribute('data-key')]=s.value;});
 var shown=0;document.querySelectorAll('section.board').forEach(function(sec){var any=0;
  sec.querySelectorAll('table.lb tbody tr').forEach(function(tr){var ok=true;
   for(var k in sel){if(sel[k]!==''&&tr.getAttribute('data-'+k)!==sel[k])ok=false;}
   tr.style.display=ok?'':'none';if(ok){any++;shown++;}});
  sec.style.display=any?'':'none';});
 document.getElementById('shown').textContent=shown+' rows shown';}
document.querySelectorAll('select.filter').forEach(function(s){s.addEventListener('change',applyFilters);});
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));var el=id&&document.getElementById(id);
 if(el&&el.tagName==='DETAILS'){el.open=true;el.scrollIntoView();}}
window.addEventListener('hashchange',openTarget);openTarget();applyFilters();
})();
"""
