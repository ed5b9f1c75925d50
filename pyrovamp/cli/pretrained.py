"""``pyrovamp pretrained``: the zoo (:data:`pyrovamp.PRETRAINED`) with its cards' numbers, as
:func:`pyrovamp.workflow.zoo.zoo_rows` reads them."""

from __future__ import annotations

import argparse

from pyrovamp.workflow.zoo import update_zoo_tables, zoo_rows, zoo_table

__all__ = ["run"]


def _num(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def run(args: argparse.Namespace) -> int:
    """Print one line per zoo model (nats per test image: IS with S=5000, AIS, exact where the
    latent space is two-dimensional, test ELBO; the paper's value where it has one) and how to
    load one -- or, with ``--markdown``, the Markdown table of the zoo; with ``--update FILE``,
    that table written between the ``<!-- zoo-table -->`` markers of each file. Exit status 0."""
    if args.update:
        for page in update_zoo_tables(*args.update):
            print(f"updated {page}")
        return 0
    if args.markdown:
        print(zoo_table(), end="")
        return 0
    rows = zoo_rows()
    if not rows:
        print("no pretrained models are installed")
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'IS':>8}  {'AIS':>8}  {'exact':>8}  {'ELBO':>8}  {'paper':>8}  MB")
    for r in rows:
        print(
            f"{r['name']:<{width}}  {_num(r['is']):>8}  {_num(r['ais']):>8}  "
            f"{_num(r['exact']):>8}  {_num(r['elbo']):>8}  {_num(r['paper']):>8}  "
            f"{r['megabytes']:.1f}"
        )
    print("nats per test image; load one with pyrovamp.from_pretrained(NAME), "
          "score it with pyrovamp evaluate NAME")  # fmt: skip
    return 0
