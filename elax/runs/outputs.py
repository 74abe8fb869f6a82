"""What a level's training writes and shows besides its checkpoints: each epoch's line in the level's
metrics.jsonl, naming its run, level, seed, method and sparsity (`elax.report.load_metrics` reads them as rows);
with `config.tensorboard` the same numbers as TensorBoard scalars in the level's folder; with `config.progress` a
tqdm bar per run on a terminal, or a line per epoch through `log` when the output is a file or a pipe
(`interactive`). A resumed level drops what was written past its checkpoint, and writes it again.
"""

import contextlib
import dataclasses
import glob
import json
import os
import sys
import threading

from elax import config as config_lib, masks, workdir as wd
from elax.report.metrics import method_of, run_name
from elax.runs.context import RunContext


# -- progress ------------------------------------------------------------------------------------------------------

_row = threading.local()   # the terminal row of the progress bars of this thread's runs (`progress_row`)


@contextlib.contextmanager
def progress_row(row: int):
    """Draw the progress bars of the runs this thread trains on terminal row `row` (0 = the first below the log):
    runs trained side by side (`elax.runs.jobs`) keep a row each instead of drawing over each other."""
    previous, _row.value = getattr(_row, "value", None), row
    try:
        yield
    finally:
        _row.value = previous


def interactive() -> bool:
    """Whether progress bars can be drawn: stdout and stderr are terminals. A file or a pipe (a log, CI) gets plain
    lines only: a bar there is carriage returns and escape codes, glued to the log's lines."""
    return all(_isatty(stream) for stream in (sys.stdout, sys.stderr))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # not a file, or a closed one
        return False


class Progress:
    """How a level's training shows: a tqdm `bar`, or a line per epoch through `log`, or (neither) nothing."""

    def __init__(self, bar=None, log=None):
        self.bar, self.log = bar, log

    def update(self, steps: int) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def epoch(self, ctx: RunContext, files: list["Files"], entries: list[dict]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{entries[0]['train_loss']:.3f}", acc=f"{entries[0]['train_accuracy']:.3f}")
        elif self.log is not None:
            for run_files, entry in zip(files, entries):
                self.log(epoch_line(run_files.desc, entry, ctx.config.train.epochs, ctx.total_steps))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_for(ctx: RunContext, step: int, desc: str, log) -> Progress:
    """`config.progress` on process 0: a bar on this thread's row of a terminal (`interactive`), else epoch lines."""
    if not (ctx.config.progress and wd.is_primary()):
        return Progress()
    if not interactive():
        return Progress(log=log)
    from tqdm.auto import tqdm
    return Progress(tqdm(total=ctx.total_steps, initial=step, desc=desc, unit="step", leave=False, file=sys.stderr,
                          dynamic_ncols=True, position=getattr(_row, "value", None)))


def epoch_line(desc: str, entry: dict, epochs: int, steps: int) -> str:
    """The progress line of an epoch's metrics `entry`, e.g. 'imp cifar_resnet_20_8 level 3: epoch 2/6, step
    120/240, loss 0.412, acc 0.871, test acc 0.853, 1,234 img/s' (test accuracy when the epoch was evaluated)."""
    test = f", test acc {entry['test_accuracy']:.3f}" if "test_accuracy" in entry else ""
    return (f"{desc}: epoch {entry['epoch']}/{epochs}, step {entry['step']}/{steps}, loss {entry['train_loss']:.3f}, "
            f"acc {entry['train_accuracy']:.3f}{test}, {entry['images_per_s']:,.0f} img/s")


# -- TensorBoard ---------------------------------------------------------------------------------------------------

# metrics.jsonl key -> TensorBoard tag of its scalar (test numbers only in the epochs that were evaluated).
SCALARS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "test_loss": "test/loss",
           "test_accuracy": "test/accuracy", "lr": "train/lr", "images_per_s": "train/images_per_s"}
EVENTS_GLOB = "events.out.tfevents.*"


def event_writers(ctx: RunContext, files: list["Files"], step: int) -> list:
    """A TensorBoard writer into each run's level folder (`config.tensorboard`, process 0), else Nones. Events past
    `step`, of a start that was killed, are purged: the resumed run writes them again."""
    if not (ctx.config.get("tensorboard", False) and wd.is_primary()):
        return [None] * len(files)
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        config_lib.fail("tensorboard", "True needs the tensorboardX package, which is not installed.",
                        "pip install tensorboardX (or leave config.tensorboard off).")
    return [SummaryWriter(os.path.dirname(f.metrics), purge_step=step + 1) for f in files]


def write_events(writer, entry: dict) -> None:
    """One scalar per metric of the epoch, at its global step, flushed so that TensorBoard shows it now."""
    for key, tag in SCALARS.items():
        if key in entry:
            writer.add_scalar(tag, entry[key], entry["step"])
    writer.flush()


def forget_events(level_dir: str) -> None:
    for path in glob.glob(os.path.join(glob.escape(level_dir), EVENTS_GLOB)):
        os.remove(path)


def append_metrics(path: str, entry: dict) -> None:
    if wd.is_primary():
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def forget_metrics(path: str) -> None:
    """Remove a level's metrics.jsonl and TensorBoard events: they are written again from the level's start."""
    if not wd.is_primary():
        return
    if os.path.exists(path):
        os.remove(path)
    forget_events(os.path.dirname(path))


def truncate_metrics(path: str, last_step: int) -> None:
    """Drop metric lines past the restored checkpoint (they are recomputed identically)."""
    if not os.path.exists(path) or not wd.is_primary():
        return
    with open(path) as f:
        lines = [line for line in f if metrics_step(line) <= last_step]
    with open(path, "w") as f:
        f.writelines(lines)


def metrics_step(line: str) -> float:
    """The step of a metrics line; a damaged line (a write cut by a kill) sorts after every step, so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


@dataclasses.dataclass(frozen=True)
class Files:
    """Where one trained run writes (its level's checkpoints and metrics) and what it is: `desc` for its progress
    lines, `tags` for its metrics lines (`metrics_tags`)."""

    checkpoints: str
    metrics: str
    desc: str = ""
    tags: dict = dataclasses.field(default_factory=dict)


def level_files(ctx: RunContext, workdir: str, level: int, desc: str, method: str | None, mask) -> Files:
    return Files(wd.checkpoints_dir(workdir, level), wd.metrics_path(workdir, level), desc,
                  metrics_tags(ctx, workdir, level, method, mask))


def metrics_tags(ctx: RunContext, workdir: str, level: int, method: str | None, mask) -> dict:
    """What each metrics line of a level says it belongs to (`elax.report.metrics.IDENTITY`): the run's name within
    its experiment and its absolute workdir, the level, seed, method (default: the config's) and the sparsity of
    the level's ticket."""
    kept, total = masks.count(mask, ctx.prunable)
    return {"run": run_name(workdir), "workdir": os.path.realpath(workdir), "level": level, "seed": ctx.config.seed,
            "method": method or method_of(ctx.config), "sparsity": 1.0 - kept / total}


def append_epoch(files: list[Files], entries: list[dict], writers: list) -> None:
    """Each run's metrics line of the epoch, its identity first (a stack's lines say how many runs trained
    together), and its TensorBoard scalars."""
    for run_files, entry, writer in zip(files, entries, writers):
        stacked = {"stacked": len(files)} if len(files) > 1 else {}
        append_metrics(run_files.metrics, {**run_files.tags, **entry, **stacked})
        if writer is not None:
            write_events(writer, entry)
