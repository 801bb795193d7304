"""Self-contained HTML: inline images (data URIs), plain tables, one stylesheet, no scripts.

Pages open without a network and are written atomically (a temporary file in the same folder,
renamed over the target), so a crash leaves either the old page or the new one, never half of one.
"""

import base64
import html
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; }
nav a { margin-right: 1em; } img { max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
.muted { color: #777; } .frames { display: flex; gap: 6px; align-items: flex-start; }
.frames figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
details { margin: 0.5em 0; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def png_img(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def jpeg_img(frame: np.ndarray, alt: str, *, max_width: int = 240, quality: int = 82) -> str:
    """An (H, W, 3) uint8 RGB frame, scaled down to `max_width`, as an inline JPEG."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)))
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=quality)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/jpeg;base64,{data}">'


def figure(img: str, caption: str) -> str:
    return f'<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>'


def table(headers: Sequence[str], rows: Iterable[Sequence], *, row_class: str = '') -> str:
    """Cells are escaped; numbers are right-aligned."""
    head = ''.join(f'<th>{esc(h)}</th>' for h in headers)
    cls = f' class="{esc(row_class)}"' if row_class else ''
    body = []
    for row in rows:
        cells = ''.join(
            f'<td class="num">{_fmt(v)}</td>'
            if isinstance(v, int | float)
            else f'<td>{esc(v)}</td>'
            for v in row
        )
        body.append(f'<tr{cls}>{cells}</tr>')
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def section(section_id: str, title: str, body: str, **data) -> str:
    """A <section> with `data-*` attributes (counts a test or a script can read)."""
    attrs = ''.join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return f'<section id="{esc(section_id)}"{attrs}><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, heading: str, sections: Sequence[tuple[str, str, str]], intro: str) -> str:
    """`sections`: (id, title, html) in order; a navigation bar links them."""
    nav = ''.join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    body = ''.join(s for _, _, s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{esc(title)}</title><style>{STYLE}</style></head><body>'
        f'<h1>{esc(heading)}</h1>{intro}<nav>{nav}</nav>{body}</body></html>\n'
    )


def write_atomic(path: Path, content: str | bytes) -> Path:
    """Write `content` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    data = content.encode() if isinstance(content, str) else content
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for people to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(value) -> str:
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        if value != value:
            return '-'
        return f'{value:.4g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)
