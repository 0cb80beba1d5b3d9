"""One writer per format over the table model (results/tables.py): Markdown, LaTeX and HTML.

A cell's lines are plain Unicode with `code` spans; each writer escapes them for its format.
HTML is written by Jinja2 templates (results/templates/: the page, the report, and the macros for a
table, a registry table's section, the verdict colours and the legend), every value escaped unless
it is already HTML (a macro's output), with one stylesheet (templates/style.css).
"""

from __future__ import annotations

import functools
import html
import pathlib
import re

import jinja2
from markupsafe import Markup

from results import claims as claims_lib
from results import tables

# ---- Markdown ---------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(t: tables.Table) -> list[str]:
    """A pipe table; a cell's lines joined by <br> (GitHub's Markdown renders it as a break)."""
    lines = ["| " + " | ".join(_md(h) for h in t.head) + " |", "|" + "---|" * len(t.head)]
    lines += ["| " + " | ".join("<br>".join(_md(x) for x in c.lines) for c in row.cells) + " |"
              for row in t.rows]
    return lines


# ---- LaTeX ------------------------------------------------------------------------------------

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "--", "—": "---", "…": r"\ldots{}",
                "✗": r"$\times$", "·": r"$\cdot$", "×": r"$\times$", "α": r"$\alpha$",
                "β": r"$\beta$", "γ": r"$\gamma$", "ρ": r"$\rho$", "ε": r"$\epsilon$", "θ": r"$\theta$"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    for uni, tex in _TEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def _tex_cell(cell: tables.Cell) -> str:
    lines = [tex_escape(x) for x in cell.lines]
    if len(lines) <= 1:
        return "".join(lines)
    # A nested tabular stacks a cell's lines without extra packages.
    return r"\begin{tabular}[c]{@{}c@{}}" + r" \\ ".join(lines) + r"\end{tabular}"


def latex_table(t: tables.Table, columns: str) -> list[str]:
    """A booktabs tabular; `columns` its column spec (e.g. "lcc")."""
    return ([r"\begin{tabular}{" + columns + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in t.head) + r" \\", r"\midrule"]
            + [" & ".join(_tex_cell(c) for c in row.cells) + r" \\" for row in t.rows]
            + [r"\bottomrule", r"\end{tabular}"])


# ---- HTML -------------------------------------------------------------------------------------

TEMPLATES = pathlib.Path(__file__).with_name("templates")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")

ONE_SEED = ", 1 seed"  # claims.verdict's suffix when a side has a single seed
# What each colour means (results/claims.py's rule), in the order the legend lists them.
VERDICT_LEGEND = (
    ((claims_lib.HOLDS, claims_lib.HOLDS + ONE_SEED),
     "d clears the claim's bar by 2 standard errors (>: d − 2 SE > 0; >=: d − 2 SE ≥ 0; ~: |d| + 2 SE "
     "≤ the tolerance); with one seed on a side there is no SE and the point values decide"),
    ((claims_lib.FAILS, claims_lib.FAILS + ONE_SEED),
     "the evidence contradicts the claim by 2 standard errors (> and >=: d + 2 SE < 0; ~: |d| − 2 SE "
     "> the tolerance); with one seed, on the point values"),
    ((claims_lib.NOISE,), "neither: d is within 2 standard errors of the bar"),
    ((claims_lib.BY_DESIGN,), "fails where our implementation cannot meet the claim (its by_design in "
                              "the table file says why)"),
    ((claims_lib.MISSING,), "a side has no completed seed"))
PLUS_MINUS_LEGEND = (
    "± in a claims table's “Ours lhs” and “Ours rhs” columns: the sample standard deviation over the "
    "completed seeds (ddof 1; n is their number; a single seed shows no ±). ± in its “d (ours)” "
    "column, marked (2 SE): 2 standard errors of d, SE² = s_lhs²/n_lhs + factor² × s_rhs²/n_rhs "
    "with those sample standard deviations, the margin the verdict rule holds d to (none where a "
    "side has a single seed).",
    "In the results tables, ± after ours is the sample standard deviation over seeds too (ddof 1), "
    "and after the paper's value the std the paper prints.")


def inline_html(text) -> Markup:
    """`text` escaped for HTML, with the one inline Markdown construct our texts use, `code`
    spans, as <code> (what the Markdown render shows as code); HTML already made passes as is."""
    if isinstance(text, Markup):
        return text
    return Markup(_CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(str(text))))


def verdict_class(verdict: str) -> str:
    """The CSS classes of a verdict as rendered ("holds, 1 seed" is coloured as holds)."""
    return f"verdict verdict-{tables.verdict_kind(verdict)}"


def _css_class(kind: str) -> str:
    """A cell's kind as CSS: a verdict kind is coloured as its verdict; another names its class."""
    return f"verdict verdict-{kind}" if kind in {*tables.VERDICT_KINDS.values(), "other"} else kind


def _escaped(value) -> Markup:
    # Every {{ value }} goes through the standard library's html.escape (the renders' entities
    # since before the templates: &#x27; and &quot;) unless it is HTML already.
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             finalize=_escaped, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(inline=inline_html, verdict_class=verdict_class, css_class=_css_class,
                       join_lines=lambda lines: Markup("<br>").join(inline_html(x) for x in lines))
    env.globals.update(verdict_legend=VERDICT_LEGEND, plus_minus_legend=PLUS_MINUS_LEGEND)
    return env


def stylesheet() -> Markup:
    return Markup((TEMPLATES / "style.css").read_text())


def html_document(template: str, heading: str, **context) -> str:
    """A whole page: `template` (extending page.html.j2) with the stylesheet and `context`."""
    return environment().get_template(template).render(
        heading=heading, style=stylesheet(), **context)


def verdict_counts_html(checks) -> Markup:
    """claims.summary_line with each count in its verdict's colour."""
    macros = environment().get_template("macros.html.j2").module
    return Markup(macros.verdict_counts(claims_lib.verdict_counts(checks)))
