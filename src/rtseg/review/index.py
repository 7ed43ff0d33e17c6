"""The batch index page: every case of a run, the ones to review first on top."""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from rtseg.review.qa import sort_cases


def batch_index(qas: Sequence[Mapping[str, Any]], links: Mapping[str, str], title: str = "rtseg review: cases") -> str:
    """HTML linking each case's page (``links[case]``, relative paths), sorted by flag weight, then count.

    ``qas`` are the cases' qa.json dicts; a case without a page is listed without a link.
    """
    rows = []
    for q in sort_cases(qas):
        case = str(q.get("case"))
        name = html.escape(case)
        cell = f'<a href="{html.escape(links[case], quote=True)}">{name}</a>' if case in links else name
        flags = "".join(f"<li>{html.escape(f['text'])}</li>" for f in q["flags"])
        rows.append(f'<tr class="{"flagged" if q["flags"] else ""}"><td class="name">{cell}</td><td>{q["n_flags"]}</td>'
                    f'<td>{q["flag_weight"]}</td><td class="flags"><ul>{flags}</ul></td></tr>')
    style = ("body{font:14px/1.4 system-ui,sans-serif;margin:12px 18px}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}tr.flagged td{background:#fff1e0}ul{margin:0;padding-left:18px}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f"content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><link rel=\"icon\" href=\"data:,\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p>{len(qas)} case(s), most flagged first.</p><table id="cases"><tr><th>case</th><th>flags</th><th>weight</th>'
            f'<th>findings</th></tr>{"".join(rows)}</table></body></html>')
