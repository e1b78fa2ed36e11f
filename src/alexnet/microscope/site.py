"""The microscope's pages: plain HTML and one stylesheet, every link relative, so the
folder opens from disk (file://) or behind any static server, and moves as a whole.

    OUT/index.html                  the net: its layers, conv1's kernels, a link per layer
    OUT/layers/LAYER.html           a grid of the layer's units
    OUT/units/LAYER/UNIT.html       one unit: visualisation, top patches, distribution
    OUT/img/...                     the pictures (see build.py)

Each page counts, once loaded, the images that failed to load: `data-broken` on its
body, and a console error naming them, so a browser (or a test) sees a hole at once.
"""

from __future__ import annotations

import html

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em auto;max-width:1180px;color:#222;padding:0 1em}
a{color:#1a5fb4;text-decoration:none}a:hover{text-decoration:underline}
nav{font-size:13px;margin-bottom:.6em;color:#666}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 9px;text-align:right}
th{border-bottom:1px solid #bbb}td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(132px,1fr));gap:10px}
.cell{border:1px solid #ddd;border-radius:4px;padding:4px;text-align:center;font-size:12px}
.cell img{width:60px;height:60px;image-rendering:pixelated;object-fit:cover}
.pair{display:flex;gap:4px;justify-content:center}
.missing{width:60px;height:60px;background:#eee;display:inline-block}
.big{width:256px;height:256px;image-rendering:pixelated}
.kernel{width:132px;height:132px;image-rendering:pixelated}
.tops{display:flex;flex-wrap:wrap;gap:12px}
.top{font-size:12px;text-align:center;width:150px}
.top .patch{width:112px;height:112px;image-rendering:pixelated;object-fit:contain;background:#f4f4f4}
.source{position:relative;width:112px;height:112px;margin:3px auto 0}
.source img{width:112px;height:112px}
.box{position:absolute;border:2px solid #ffd400;box-sizing:border-box}
.row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.note{color:#666;font-size:13px}
"""

CHECK_IMAGES = (
    "<script>addEventListener('load',function(){var all=document.images,bad=[];"
    "for(var i=0;i<all.length;i++){if(!(all[i].complete&&all[i].naturalWidth>0))"
    "bad.push(all[i].getAttribute('src'))}document.body.dataset.images=all.length;"
    "document.body.dataset.broken=bad.length;"
    "if(bad.length)console.error('images that did not load: '+bad.join(' '))})</script>"
)


def page(title: str, up: str, body: str) -> str:
    """A whole page; `up` is the path from it to the site's root ('' or '../')."""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        f"<link rel=stylesheet href='{up}style.css'><body>{body}{CHECK_IMAGES}</body></html>"
    )


def e(text) -> str:
    return html.escape(str(text))


def img(src: str | None, cls: str, alt: str) -> str:
    if src is None:
        return f"<span class='missing' title='{e(alt)}: not drawn yet'></span>"
    return f"<img class='{cls}' src='{e(src)}' alt='{e(alt)}'>"


def index_page(site: dict) -> str:
    rows = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{e(r['kind'])}</td>"
        f"<td>{'x'.join(str(d) for d in r['output_shape'])}</td><td>{r['params']:,}</td>"
        f"<td>{'' if r['receptive_field'] is None else r['receptive_field']}</td></tr>"
        for r in site["table"]
    )
    layers = "".join(
        f"<li><a href='layers/{e(lay['slug'])}.html'>{e(lay['layer'])}</a>: "
        f"{len(lay['units'])} units, {lay['drawn']} visualisations drawn</li>"
        for lay in site["layers"]
    )
    kernels = (
        "<h2>conv1's kernels (Figure 3)</h2>"
        "<p class=note>One block per tower (per GPU in the paper), each kernel scaled to its "
        "own range; the bar under each is its colour index.</p>"
        "<img src='img/kernels.png' alt='conv1 kernels'>"
    )
    body = (
        f"<h1>Microscope: {e(site['weights'])}</h1>"
        f"<p>{e(site['variant'])} net, {site['num_classes']} classes; dataset patches from "
        f"{site['images']:,} images of {e(site['data'])}; feature visualisations: "
        f"{e(site['recipe_line'])}.</p>"
        f"<h2>Layers</h2><ul>{layers}</ul>{kernels}"
        "<h2>The net</h2><p class=note>field: the side of the input square a unit sees.</p>"
        "<table><tr><th>layer<th>type<th>output<th>params<th>field</tr>"
        f"{rows}</table>"
    )
    return page(f"microscope: {site['weights']}", "", body)


def layer_page(site: dict, layer: dict, units: list[dict]) -> str:
    cells = "".join(
        f"<div class=cell><a href='../units/{e(layer['slug'])}/{u['unit']}.html'>"
        f"<div class=pair>{img(_up(u['visualization'], 1), '', 'visualisation')}"
        f"{img(_up(u['strongest'], 1), '', 'strongest patch')}</div>"
        f"{e(u['label'])}</a></div>"
        for u in units
    )
    field = layer["receptive_field"]
    where = f"receptive field {field} px" if field else "the whole image"
    body = (
        f"<nav><a href='../index.html'>index</a></nav><h1>{e(layer['layer'])}</h1>"
        f"<p>{len(units)} units; each cell: its feature visualisation, then its strongest "
        f"dataset patch ({where}).</p><div class=grid>{cells}</div>"
    )
    return page(f"{layer['layer']}: microscope", "../", body)


def unit_page(site: dict, layer: dict, unit: dict, neighbours: tuple) -> str:
    slug = layer["slug"]
    prev, nxt = neighbours
    nav = (
        f"<nav><a href='../../index.html'>index</a> / "
        f"<a href='../../layers/{e(slug)}.html'>{e(layer['layer'])}</a>"
        + (f" / <a href='{prev}.html'>&larr; unit {prev}</a>" if prev is not None else "")
        + (f" / <a href='{nxt}.html'>unit {nxt} &rarr;</a>" if nxt is not None else "")
        + "</nav>"
    )
    vis = (
        img(_up(unit["visualization"], 2), "big", "feature visualisation")
        if unit["visualization"]
        else f"<p class=note>{e(site['missing_vis'])}</p>"
    )
    kernel = (
        f"<div><h2>Its kernel</h2>{img(_up(unit['kernel'], 2), 'kernel', 'kernel')}</div>"
        if unit.get("kernel")
        else ""
    )
    tops = "".join(_top(t, layer["input_crop"]) for t in unit["top"])
    body = (
        f"{nav}<h1>{e(layer['layer'])}, {e(unit['label'])}</h1>"
        f"<div class=row><div><h2>Feature visualisation</h2>{vis}</div>{kernel}"
        f"<div><h2>Its responses</h2>{histogram_svg(unit['distribution'])}</div></div>"
        f"<h2>Top {len(unit['top'])} of {site['images']:,} images</h2>"
        f"<p class=note>Each: the patch under the unit's strongest position (its receptive "
        f"field), its response, and the image the net saw with the patch outlined.</p>"
        f"<div class=tops>{tops}</div>"
    )
    return page(f"{layer['layer']} {unit['label']}: microscope", "../../", body)


def _top(t: dict, crop: int) -> str:
    top, left, bottom, right = t["box"]
    pct = lambda v: f"{100 * v / crop:.2f}%"  # noqa: E731
    box = (
        f"<div class=box style='top:{pct(top)};left:{pct(left)};"
        f"height:{pct(bottom - top)};width:{pct(right - left)}'></div>"
    )
    return (
        f"<div class=top>{img(_up(t['patch'], 2), 'patch', 'patch')}<br>{t['activation']:.4g}"
        f"<div class=source>{img(_up(t['source'], 2), '', t['image'])}{box}</div>"
        f"<span title='{e(t['image'])}'>{e(_short(t['image']))}</span></div>"
    )


def _up(path: str | None, levels: int) -> str | None:
    return None if path is None else "../" * levels + path


def _short(name: str, most: int = 22) -> str:
    return name if len(name) <= most else name[: most // 2 - 1] + "…" + name[-(most // 2) :]


def histogram_svg(dist: dict, width: int = 300, height: int = 150) -> str:
    """The unit's strongest response per image, over the sampled images, as an inline
    SVG histogram with its count of images, mean and share above zero."""
    counts = dist["counts"]
    if not counts:
        return "<p class=note>no images</p>"
    top = max(counts) or 1
    bar = width / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 20 - (height - 30) * c / top:.1f}' "
        f"width='{max(bar - 1, 1):.1f}' height='{(height - 30) * c / top:.1f}' fill='#4a78b8'/>"
        for i, c in enumerate(counts)
    )
    lo, hi = dist["edges"][0], dist["edges"][-1]
    axis = (
        f"<text x='0' y='{height - 5}' font-size='11'>{lo:.3g}</text>"
        f"<text x='{width}' y='{height - 5}' font-size='11' text-anchor='end'>{hi:.3g}</text>"
    )
    caption = (
        f"{dist['images']:,} images: mean {dist['mean']:.3g}, above zero on "
        f"{100 * dist['active']:.0f}%"
    )
    return (
        f"<svg width='{width}' height='{height}' role='img' aria-label='histogram'>"
        f"{bars}{axis}</svg><div class=note>{e(caption)}</div>"
    )
