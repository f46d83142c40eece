"""``transunet models install PKG.zip | list | show NAME | remove NAME``: the local model store
(``$TRANSUNET_HOME``, default ``~/.transunet/models``; nothing is downloaded)."""
from __future__ import annotations

HELP = "install, list, show or remove model packages ($TRANSUNET_HOME, offline)"


def _num(value, digits: int) -> str:
    """A card number for a person: rounded, or "not measured" for null."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "not measured"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("install", help="install a package file (verified, atomic)")
    p.add_argument("package", metavar="PKG.zip")
    p.add_argument("--force", action="store_true", help="replace the same name and version")
    sub.add_parser("list", help="installed models")
    p = sub.add_parser("show", help="a model's card (flags unspecified fields)")
    p.add_argument("name", metavar="NAME[@VERSION]")
    p.add_argument("--json", action="store_true", help="print model.json as is")
    p = sub.add_parser("remove", help="remove a model (every version, or NAME@VERSION)")
    p.add_argument("name", metavar="NAME[@VERSION]")


def run(args) -> int:
    from ..packages import store

    if args.action == "install":
        pkg = store.install(args.package, force=args.force)
        print(f"installed {pkg.card['name']} {pkg.card['version']} -> {pkg.source}")
        _flag(pkg.card)
        return 0
    if args.action == "list":
        rows = store.installed()
        if not rows:
            print(f"no models installed in {store.models_home()}")
            return 0
        import json

        print(f"{'name':<24} {'version':<12} {'architecture':<16} {'classes':>7}  licence")
        for name, version, folder in rows:
            card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
            print(f"{name:<24} {version:<12} {str(card.get('architecture', {}).get('name')):<16} "
                  f"{len(card.get('labels', [])):>7}  {card.get('license')}")
        return 0
    if args.action == "show":
        pkg = store.resolve_model(args.name)
        if args.json:
            import json

            print(json.dumps(pkg.card, indent=2))
        else:
            print(describe(pkg))
        _flag(pkg.card)
        return 0
    if args.action == "remove":
        for folder in store.remove(args.name):
            print(f"removed {folder}")
        return 0
    return 2


def _flag(card) -> None:
    import sys

    from ..packages.card import unspecified_fields

    missing = unspecified_fields(card)
    if missing:
        print(f"warning: unspecified in the model card: {', '.join(missing)}", file=sys.stderr)


def describe(pkg) -> str:
    """A human-readable card."""
    c = pkg.card
    v = c.get("validation", {})
    td = c.get("training_data", {})
    p = c.get("preprocessing", {})
    lines = [f"{c['name']} {c['version']}  ({pkg.source})",
             f"  description:      {c.get('description')}",
             f"  authors:          {c.get('authors')}",
             f"  license:          {c.get('license')}",
             f"  intended use:     {c.get('intended_use')}",
             f"  not intended for: {c.get('not_intended_for')}",
             f"  architecture:     {c['architecture']['name']} {c['architecture']['config']}",
             f"  training data:    {td.get('dataset')} (cases {td.get('cases')}, split {td.get('split')})",
             f"  preprocessing:    HU window {p.get('hu_window')}, img_size {p.get('img_size')}, "
             f"{p.get('slice_axis')} slices in {p.get('orientation')}",
             f"  validation:       {v.get('source')}; mean Dice {_num(v.get('mean_dice'), 3)}, "
             f"mean HD95 {_num(v.get('mean_hd95'), 2)}",
             f"  HD95 convention:  {v.get('hd95_convention')}",
             f"  weights SHA-256:  {pkg.weights_sha256}",
             f"  created:          {c['created'].get('date')} (transunet-app "
             f"{c['created'].get('transunet_app')}, torch {c['created'].get('torch')})",
             "  labels:"]
    for e in c["labels"]:
        sn = e.get("snomed")
        code = f"SCT {sn['type']['code']}" if isinstance(sn, dict) else sn
        organ = v.get("per_organ", {}).get(e["name"], {}) if e["value"] else {}
        dice, hd = organ.get("dice"), organ.get("hd95")
        lines.append(f"    {e['value']:>3} {e['name']:<16} {str(e.get('color')):<8} {str(code):<14}"
                     + (f" Dice {dice:.3f}" if isinstance(dice, float) else "")
                     + (f" HD95 {hd:.2f}" if isinstance(hd, float) else ""))
    return "\n".join(lines)
