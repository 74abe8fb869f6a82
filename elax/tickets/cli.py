"""`python -m elax.tickets`: export a run's ticket to a file, publish an experiment's, describe or evaluate a file,
write one for PyTorch, import one from OpenLTH. Errors are one line (`elax.exits`), exit code 2."""

import argparse
import json
import os

from elax import exits


def main(argv=None) -> int:
    """Run one subcommand (see --help); returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as error:   # bad input, damaged or missing files, no torch
        return exits.error(error, exits.BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m elax.tickets", description="Ticket files (docs/tickets.md).")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    export = sub.add_parser("export", help="write the ticket of a run's level to one file")
    export.add_argument("run", help="the run's --workdir")
    export.add_argument("--level", type=int, required=True, help="the level (0 = the dense network)")
    export.add_argument("out", help="the file to write, e.g. r20_level10.safetensors (.gz: gzipped)")
    export.add_argument("--trained", action="store_true", help="also the weights the level trained to")
    export.set_defaults(func=_export)
    info = sub.add_parser("info", help="describe a ticket file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="the metadata as JSON")
    info.set_defaults(func=_info)
    publish = sub.add_parser("publish", help="every level of experiments' IMP and ETT runs of one seed, with "
                             "their trained weights, and a table (tickets.md)")
    publish.add_argument("experiment", nargs="+", help="the experiment's (or a run's) --workdir; several share "
                         "one table")
    publish.add_argument("out", help="the folder to write: OUT/<run>/level_NN.safetensors.gz and OUT/tickets.md "
                         "(<run>: its path in its EXPERIMENT)")
    publish.add_argument("--seed", type=int, default=0, help="the seed whose runs to publish (default 0)")
    publish.add_argument("--methods", default="imp,ett", help="the runs' methods, comma-separated (default imp,ett)")
    publish.add_argument("--title", help="the table's heading (default: 'Tickets of seed N of EXPERIMENT')")
    publish.set_defaults(func=_publish)
    evaluate = sub.add_parser("evaluate", help="the test accuracy of a ticket file's trained weights, measured again")
    evaluate.add_argument("file")
    evaluate.add_argument("--data-dir", help="where the ticket's dataset is here (data.dir), e.g. an image folder")
    evaluate.set_defaults(func=_evaluate)
    torch = sub.add_parser("torch", help="write a ticket file as PyTorch state dict + mask files (reference names)")
    torch.add_argument("file")
    torch.add_argument("out_dir")
    torch.set_defaults(func=_torch)
    openlth = sub.add_parser("openlth", help="import an OpenLTH / ElasticLTH level directory (needs torch)")
    openlth.add_argument("level_dir")
    openlth.add_argument("model", help="the elax model name, e.g. cifar_resnet_20")
    openlth.add_argument("out", help="the ticket file to write")
    openlth.add_argument("--weights", help="the state dict file to take (default: the earliest model_ep*_it*.pth)")
    openlth.add_argument("--iterations-per-epoch", type=int, help="to turn model_epE_itI into a step (E > 0)")
    openlth.set_defaults(func=_openlth)
    return parser


def _export(args) -> int:
    from elax.tickets.from_runs import export
    path = export(args.run, args.level, args.out, trained=args.trained)
    print(f"wrote {path}")
    return _info(argparse.Namespace(file=path, json=False))


def _info(args) -> int:
    from elax.tickets import files
    meta = files.info(args.file)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    for line in describe(meta):
        print(line)
    return 0


def describe(meta: dict) -> list[str]:
    """Readable lines of a ticket file's metadata."""
    accuracy = meta.get("test_accuracy")
    lines = [f"model: {meta['model']} (family {meta.get('family')}, {meta.get('num_classes')} classes)",
             f"level {meta['level']}, sparsity {meta.get('sparsity', 0):.2%} ({meta.get('kept_weights')} of "
             f"{meta.get('prunable_weights')} prunable weights kept), rewind step {meta['rewind_step']}",
             f"method: {meta.get('method')}, seed {meta.get('seed')}, dataset {meta.get('dataset')}, recipe "
             f"{meta.get('recipe_id')}",
             "test accuracy: " + ("unknown" if accuracy is None else f"{accuracy:.2%}"),
             f"trained weights: {'yes' if meta.get('trained') else 'no'}",
             f"from: {meta.get('run') or meta.get('source_dir') or 'unknown'}",
             f"format {meta.get('format')} v{meta['format_version']}, written by elax {meta.get('elax_version')}",
             "tensors: " + ", ".join(f"{k} {v}" for k, v in sorted(meta.get("tensors", {}).items()))]
    return lines


def _publish(args) -> int:
    from elax.tickets.publish import TABLE, publish
    rows = publish(args.experiment, args.out, seed=args.seed, methods=tuple(args.methods.split(",")),
                   title=args.title)
    print(f"wrote {len(rows)} tickets and {os.path.join(args.out, TABLE)}")
    return 0


def _evaluate(args) -> int:
    from elax.tickets import files
    from elax.tickets.publish import evaluate
    recorded, measured = files.info(args.file).get("test_accuracy"), evaluate(args.file, args.data_dir)
    print(f"test accuracy {measured['accuracy']:.2%} (loss {measured['loss']:.4f}); recorded: "
          + ("unknown" if recorded is None else f"{recorded:.2%}"))
    return 0


def _torch(args) -> int:
    from elax.tickets import files, pytorch
    ticket = files.load(args.file)
    trained = files.load_trained(args.file) if ticket.meta.get("trained") else None
    for path in pytorch.save_torch(ticket, args.out_dir, trained=trained):
        print(f"wrote {path}")
    return 0


def _openlth(args) -> int:
    from elax.tickets import files, openlth
    ticket = openlth.from_openlth(args.level_dir, args.model, weights=args.weights,
                                  iterations_per_epoch=args.iterations_per_epoch)
    print(f"wrote {files.save(ticket, args.out)}")
    return 0
