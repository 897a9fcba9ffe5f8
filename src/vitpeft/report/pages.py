"""Self-contained HTML pages for the Snakemake report (which shows an HTML file as it is and a CSV only as a
download): a table with its notes, on one page with no script and no external file."""

import html

STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:1em} table{border-collapse:collapse;margin-bottom:1em} "
    "th,td{border-bottom:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap} "
    "th{background:#f3f3f3} p,ul{max-width:70em}"
)


def page(title: str, content: str) -> str:
    """A whole HTML page holding `content` (HTML) under the heading `title`."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{content}\n</body></html>\n")


def table(headers: list, rows: list) -> str:
    """An HTML table of strings, each escaped."""
    cells = lambda tag, values: "".join(f"<{tag}>{html.escape(str(value))}</{tag}>" for value in values)  # noqa: E731
    body = "\n".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table>\n<thead><tr>{cells('th', headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def notes(paragraphs: list) -> str:
    """Paragraphs (str) and bullet lists (list of str) as HTML, escaped."""
    parts = []
    for note in paragraphs:
        if isinstance(note, list):
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in note) + "</ul>")
        else:
            parts.append(f"<p>{html.escape(note)}</p>")
    return "\n".join(parts)


def heading(text: str) -> str:
    return f"<h2>{html.escape(text)}</h2>"
