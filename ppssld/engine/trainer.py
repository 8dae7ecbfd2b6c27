"""The training loop: ``train_one_epoch`` and ``fit``; nothing else lives here."""
import logging
import time
from typing import Any, Dict, List, Optional

import paddle

from ppssld.engine import distributed
from ppssld.engine.checkpoint import Checkpointer, rng_state, set_rng_state, snapshot_interval
from ppssld.utils.folder_lock import lock_folder
from ppssld.engine.evaluator import evaluate
from ppssld.engine.finite_watch import FiniteWatch, TrainingDivergedError
from ppssld.engine.meters import AverageMeter, DeviceMeters, format_eta, format_metrics
from ppssld.data.batch.mixed_labels import MixedLabels
from ppssld.utils import device_checks
from ppssld.utils.device_checks import DeferredChecks

logger = logging.getLogger(__name__)
FOLDER_WHAT = "the checkpoint folder (Global.output_dir/Arch.name)"


class Trainer:
    """Runs epochs of training, evaluation and checkpointing.

    Args:
        model: the (unwrapped) model; a DistillationModel or a plain backbone.
        train_loader / train_sampler: training data; ``train_sampler.set_epoch`` fixes the shuffle.
        loss_fn: combined ``Loss.Train`` layer returning named parts and ``loss``.
        optimizer / scheduler: from :func:`ppssld.optim.build_optimizer`; the scheduler steps per iteration.
        checkpointer: writes checkpoints (rank 0 only).
        epochs: total epochs (``Global.epochs``).
        eval_loader / eval_metrics / eval_loss: evaluation pieces (optional).
        train_metrics: metrics logged on training batches (optional).
        options: ``save_interval``, ``eval_interval``, ``eval_during_train``, ``start_eval_epoch``,
            ``print_batch_step``; ``amp`` (dict or None); ``visualdl`` (a LogWriter or None);
            ``update_freq`` (micro-batches per optimizer update); ``ema`` (a ModelEMA or None);
            ``metric_key`` (the eval result that ranks checkpoints, default ``top1``);
            ``batch_transform`` (:class:`ppssld.data.batch.ops.BatchTransform` or None: mixes each batch
            before the model; train metrics skip mixed batches); ``folder_lock`` (the checkpoint folder's
            :class:`ppssld.utils.folder_lock.FolderLock`, released when :meth:`fit` ends); ``progressive``
            (:class:`ppssld.engine.progressive.ProgressiveTraining` or None: sets each epoch's stage first).
    """

    def __init__(self, model: paddle.nn.Layer, train_loader: Any, train_sampler: Any, loss_fn: Any,
                 optimizer: Any, scheduler: Any, checkpointer: Checkpointer, epochs: int,
                 eval_loader: Any = None, eval_metrics: Optional[List[Any]] = None, eval_loss: Any = None,
                 train_metrics: Optional[List[Any]] = None, **options: Any) -> None:
        self.model = model
        self.net = paddle.DataParallel(model) if distributed.world_size() > 1 else model
        self.train_loader, self.train_sampler = train_loader, train_sampler
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        # trainable loss layers (MGD generator, PEFD projectors) need their gradients averaged too
        self.loss_net = paddle.DataParallel(loss_fn) if distributed.world_size() > 1 and any(
            not p.stop_gradient for p in loss_fn.parameters()) else loss_fn
        self.checkpointer, self.epochs = checkpointer, int(epochs)
        self.eval_loader, self.eval_metrics, self.eval_loss = eval_loader, eval_metrics or [], eval_loss
        self.train_metrics = train_metrics or []
        self.save_interval = snapshot_interval(options.get("save_interval"))
        self.eval_interval = int(options.get("eval_interval", 1) or 1)
        self.eval_during_train = bool(options.get("eval_during_train", True)) and eval_loader is not None
        self.start_eval_epoch = int(options.get("start_eval_epoch", 0) or 0)
        self.print_batch_step = int(options.get("print_batch_step", 10) or 10)
        self.amp = options.get("amp")
        self.scaler = options.get("scaler")
        self.visualdl = options.get("visualdl")
        self.update_freq = int(options.get("update_freq", 1) or 1)
        self.ema = options.get("ema")
        self.metric_key = str(options.get("metric_key", "top1"))
        self.best_metric_ema = -1.0
        self.batch_transform = options.get("batch_transform")
        self.folder_lock = options.get("folder_lock")  # held from build_trainer to the end of fit (rank 0)
        self.progressive = options.get("progressive")
        self.start_epoch, self.global_step = 1, 0
        self.resumed_from: Optional[str] = None
        self.best_metric, self.best_epoch = -1.0, 0
        self.pending_eval_epoch = 0
        self.history: List[Dict[str, Any]] = []

    def resume(self, path: str, strict: bool = True, trust: bool = False) -> None:
        """Restore model, optimizer, scheduler, RNG, EMA and counters from a checkpoint (ppssld's or PaddleClas's).

        PaddleClas's ``.pdstates`` holds only ``epoch`` and that epoch's ``metric``: the step
        counter is then ``epoch * steps_per_epoch`` and, as in PaddleClas, the best metric
        starts afresh (the next evaluation writes ``best_model``). ``trust``: read its pickles with
        ``paddle.load`` (``Global.trust_weights``).
        """
        states = Checkpointer.load(path, self.model, self.optimizer, strict=strict, trust=trust,
                                   loss=self.loss_fn, ema=self.ema)
        self.start_epoch = int(states.get("epoch", 0)) + 1
        self.resumed_from = path
        self.global_step = int(states.get("step", int(states.get("epoch", 0)) * self._steps_per_epoch()))
        self.best_metric = float(states.get("best_metric", -1.0))
        self.best_epoch = int(states.get("best_epoch", 0))
        self.pending_eval_epoch = int(states.get("epoch", 0)) if states.get("eval_pending") else 0
        self.best_metric_ema = float(states.get("best_metric_ema", -1.0))

    def _steps_per_epoch(self) -> int:
        """Micro-batches trained per epoch: PaddleClas drops a last partial ``update_freq`` group."""
        return len(self.train_loader) // self.update_freq * self.update_freq

    def _forward_loss(self, images: paddle.Tensor, labels: paddle.Tensor):
        if self.amp:
            with paddle.amp.auto_cast(level=self.amp["level"], custom_black_list=self.amp.get("black_list")):
                outputs = self.net(images)
        else:
            outputs = self.net(images)
        return outputs, self.loss_net(outputs, labels)

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """Train for one epoch.

        Nothing is read from the device inside a step: loss parts, train metrics, the non-finite flag
        and the loss functions' checks accumulate there and are read in one transfer every
        ``print_batch_step`` steps and at the last step (:meth:`_read_device`).

        Args:
            epoch: 1-based epoch number (also fixes the shuffle via ``set_epoch``).
        Returns:
            Sample-weighted averages of every loss part (and train metrics).
        Raises:
            TrainingDivergedError: a non-finite loss, naming epoch and step, at the next read; the
                epoch's checkpoint is never written.
        """
        self.model.train()
        self.loss_fn.train()
        if self.progressive is not None:  # the stage's image size, magnitude and head dropout
            self.progressive.begin_epoch(epoch)
        if hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)
        meters, watch, checks = DeviceMeters(), FiniteWatch(distributed.world_size()), DeferredChecks()
        batch_time, reader_time = AverageMeter(), AverageMeter()
        steps = self._steps_per_epoch()
        read_at, step = 0, 0
        tic = time.time()
        for metric in self.train_metrics:
            metric.reset()
        with device_checks.deferred(checks):
            for step, (images, labels) in enumerate(self.train_loader, start=1):
                if step > steps:
                    step = steps
                    break
                reader_time.update(time.time() - tic)
                if self.batch_transform is not None:
                    images, labels = self.batch_transform(images, labels, epoch, step)
                with distributed.peer_guard(f"training epoch {epoch}, step {step}/{steps}"):
                    outputs, parts = self._forward_loss(images, labels)
                    loss = parts["loss"] / self.update_freq if self.update_freq > 1 else parts["loss"]
                    watch.observe(loss)
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                    if step % self.update_freq == 0:  # gradients of update_freq micro-batches summed: one update
                        if self.scaler is not None:
                            self.scaler.step(self.optimizer)
                            self.scaler.update()
                        else:
                            self.optimizer.step()
                if step % self.update_freq == 0:
                    self.optimizer.clear_grad()
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update(self.model)
                self.global_step += 1
                n = int(labels.shape[0])
                meters.update(parts, n)
                for metric in self.train_metrics:
                    if not isinstance(labels, MixedLabels):  # accuracy is undefined on mixed images
                        accumulate = getattr(metric, "accumulate", None)  # on the device: no host read per step
                        (accumulate or metric.update)(outputs, labels)
                if step % self.print_batch_step == 0 or step == steps:
                    self._read_device(epoch, read_at, step, steps, meters, watch, checks)
                    read_at = step
                    # timed after the window's one device read: on a GPU the queued kernels are in batch_cost
                    batch_time.update(time.time() - tic, 1)
                    self._log_step(epoch, step, steps, meters.averages, batch_time, reader_time, n)
                else:
                    batch_time.update(time.time() - tic, 1)
                tic = time.time()
            if step > read_at:  # a loader that ended early: what it trained is still checked
                self._read_device(epoch, read_at, step, steps, meters, watch, checks)
        frozen = tuple(f"{name}." for name in getattr(self.model, "frozen", []))
        with distributed.peer_guard(f"averaging BatchNorm statistics after epoch {epoch}"):
            distributed.average_buffers(self.model, skip_prefixes=frozen)
        averages = dict(meters.averages)
        for metric in self.train_metrics:
            averages.update(metric.summary())
        logger.info("[Train][Epoch %d/%d][Avg]%s", epoch, self.epochs, format_metrics(averages))
        return averages

    def _read_device(self, epoch: int, read_at: int, step: int, steps: int, meters: DeviceMeters,
                     watch: "FiniteWatch", checks: DeferredChecks) -> None:
        """The one host read of steps ``read_at + 1 .. step``: every rank's non-finite codes, the loss parts
        and the deferred checks, in a single transfer.

        Raises:
            TrainingDivergedError: on every rank alike, when any rank's loss was non-finite.
            The first deferred check's error (e.g. labels out of range), naming the steps.
        """
        with distributed.peer_guard(f"reading training epoch {epoch}, step {step}/{steps}"):
            codes = watch.codes()  # [ranks, window]: every rank holds the same values
            parts = [codes.reshape([-1]).astype("float64")] + meters.window() + checks.tensors()
            values = paddle.concat([p.reshape([-1]) for p in parts]).numpy().tolist()  # the host read
        world, window = codes.shape[0], step - read_at
        per_rank = [values[r * window:(r + 1) * window] for r in range(world)]
        self._raise_if_diverged(epoch, read_at, step, steps, per_rank)
        rest = meters.read_from(values[world * window:])
        error = checks.settle(rest, f"epoch {epoch}, steps {read_at + 1}-{step}/{steps}")
        if error is not None:
            raise error

    def _raise_if_diverged(self, epoch: int, read_at: int, step: int, steps: int,
                           per_rank: List[List[float]]) -> None:
        """Stop every rank, with the same message, when the loss of any rank was NaN or infinite.

        ``per_rank``: each rank's codes for steps ``read_at + 1 .. step`` (:meth:`FiniteWatch.codes`); every
        rank reads the same all-reduced values, so all take the same branch and none is left waiting.
        """
        bad = []
        for rank_id, codes in enumerate(per_rank):
            hit = next((i for i, code in enumerate(codes) if code), None)
            if hit is not None:
                bad.append((rank_id, read_at + hit + 1, FiniteWatch.VALUES[int(codes[hit])]))
        if not bad:
            return
        first_step = min(s for _, s, _ in bad)
        first = next(v for _, s, v in bad if s == first_step)
        where = ""
        if len(per_rank) > 1:
            where = " on rank " + ", ".join(f"{r} ({v}{'' if s == first_step else f', step {s}'})"
                                              for r, s, v in bad)
        detected = ""
        if step > first_step:
            detected = (f"; detected at step {step}/{steps}: the loss is read every Global.print_batch_step="
                        f"{self.print_batch_step} steps, so steps {first_step}-{step} ran on non-finite values "
                        f"(none was saved)")
        raise TrainingDivergedError(
            f"loss became {first} at epoch {epoch}, step {first_step}/{steps}{where} (global step "
            f"{self.global_step - step + first_step}){detected}; training stopped on every rank. The last good "
            f"checkpoint is {self.checkpointer.save_dir}/latest. Lower the learning rate or check the data")

    def _log_step(self, epoch: int, step: int, steps: int, averages: Dict[str, float],
                  batch_time: AverageMeter, reader_time: AverageMeter, batch_size: int) -> None:
        remaining = (self.epochs - epoch) * steps + (steps - step)
        ips = batch_size / max(batch_time.avg, 1e-9)
        lr = self.optimizer.get_lr()
        losses = format_metrics(averages)
        logger.info("[Train][Epoch %d/%d][Iter: %d/%d]lr(%s): %.8f, %s, batch_cost: %.5fs, reader_cost: %.5fs, "
                    "ips: %.5f samples/s, eta: %s", epoch, self.epochs, step, steps, type(self.scheduler).__name__,
                    lr, losses, batch_time.avg, reader_time.avg, ips, format_eta(remaining * batch_time.avg))
        if self.visualdl is not None:
            for key, value in averages.items():
                self.visualdl.add_scalar(f"train/{key}", value, self.global_step)
            self.visualdl.add_scalar("train/lr", lr, self.global_step)
            self.visualdl.add_scalar("train/ips", ips, self.global_step)

    def _evaluate(self, epoch: int) -> Dict[str, float]:
        return evaluate(self.model, self.eval_loader, self.eval_metrics, self.eval_loss, epoch=epoch, amp=self.amp)

    def _eval_due(self, epoch: int) -> bool:
        return self.eval_during_train and epoch >= self.start_eval_epoch and (
            epoch % self.eval_interval == 0 or epoch == self.epochs)

    def _evaluate_ema(self, epoch: int, record: Dict[str, Any]) -> float:
        """Evaluate the EMA weights as PaddleClas does; the better of model and EMA ranks the checkpoint."""
        results = evaluate(self.ema.module, self.eval_loader, self.eval_metrics, self.eval_loss, epoch=epoch,
                           amp=self.amp)
        record["eval_ema"] = results
        metric = float(results.get(self.metric_key, -1.0))
        self.best_metric_ema = max(self.best_metric_ema, metric)
        logger.info("[Eval][Epoch %d][best metric ema: %.5f]", epoch, self.best_metric_ema)
        return metric

    def _save(self, tag: str, epoch: int, metric: float, eval_pending: bool = False) -> None:
        if distributed.is_main():
            self.checkpointer.save(tag, self.model, self.optimizer,
                                   {"epoch": epoch, "step": self.global_step, "metric": metric,
                                    "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                                    "eval_pending": eval_pending,
                                    **({"best_metric_ema": self.best_metric_ema} if self.ema is not None else {})},
                                   loss=self.loss_fn, ema=self.ema)

    def _evaluate_and_record(self, epoch: int, record: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
        """Evaluate after ``epoch`` (and its EMA weights), feed ReduceOnPlateau, save ``best_model`` when
        the better of model and EMA improves, then clear ``eval_pending`` in ``latest``. The random states
        are restored afterwards, so evaluating (or re-doing an evaluation after a resume) never changes
        what training does next. ``record``: gets ``eval`` (and ``eval_ema``)."""
        record = {} if record is None else record
        saved_rng = rng_state()
        with distributed.peer_guard(f"evaluating epoch {epoch}"):
            results = self._evaluate(epoch)
            record["eval"] = results
            metric = float(results.get(self.metric_key, -1.0))
            if hasattr(self.scheduler, "observe"):  # ReduceOnPlateau
                self.scheduler.observe(metric)
            if self.ema is not None:
                metric = max(metric, self._evaluate_ema(epoch, record))
        set_rng_state(saved_rng)
        if self.visualdl is not None:
            for key, value in results.items():
                self.visualdl.add_scalar(f"eval/{key}", value, epoch)
        if metric > self.best_metric:
            self.best_metric, self.best_epoch = metric, epoch
            self._save("best_model", epoch, metric)
        self._save("latest", epoch, metric)
        logger.info("[Eval][Epoch %d][best metric: %.5f at epoch %d]", epoch, self.best_metric, self.best_epoch)
        return results

    def _say_nothing_left(self, last: int) -> None:
        """A resumed run whose checkpoint already covers every epoch asked for: say so and how to go on."""
        done = self.start_epoch - 1
        if self.resumed_from is None:
            return
        logger.warning("the run is already complete: %s has trained %d epoch(s) and Global.epochs is %d, so "
                       "there is nothing left to train; to train further pass -o Global.epochs=<more than %d> "
                       "with the same Global.checkpoints (the LR schedule then spans the new total)",
                       self.resumed_from, done, last, done)

    def fit(self, stop_after_epoch: Optional[int] = None) -> Dict[str, Any]:
        """Train from ``start_epoch`` to ``epochs``, checkpointing, then evaluating.

        ``latest`` (and ``epoch_N``) are written as soon as an epoch's training ends, before its
        evaluation: an evaluation that fails loses no training. Such a ``latest`` is marked
        ``eval_pending``; resuming from it runs the missing evaluation first.

        Args:
            stop_after_epoch: end this run early after that epoch (the schedule still spans
                ``epochs``; resume later with ``Global.checkpoints``).
        Returns:
            ``best_metric``, ``best_epoch`` and the per-epoch history.
        Raises:
            OutputError: another run writes the checkpoint folder (:mod:`ppssld.utils.folder_lock`).
        """
        if self.folder_lock is None:  # build_trainer took it; a second fit() of this trainer takes it again
            self.folder_lock = lock_folder(self.checkpointer.save_dir, FOLDER_WHAT)
        try:
            return self._fit(stop_after_epoch)
        finally:
            if self.folder_lock is not None:
                self.folder_lock.release()
                self.folder_lock = None

    def _fit(self, stop_after_epoch: Optional[int]) -> Dict[str, Any]:
        if self.pending_eval_epoch:
            logger.info("evaluating epoch %d, which the interrupted run had not evaluated", self.pending_eval_epoch)
            self._evaluate_and_record(self.pending_eval_epoch)
            self.pending_eval_epoch = 0
        last = min(self.epochs, stop_after_epoch or self.epochs)
        if self.start_epoch > last:
            self._say_nothing_left(last)
        for epoch in range(self.start_epoch, last + 1):
            train_avg = self.train_one_epoch(epoch)
            record: Dict[str, Any] = {"epoch": epoch, "train": train_avg}
            due = self._eval_due(epoch)
            if self.save_interval and epoch % self.save_interval == 0:
                self._save(f"epoch_{epoch}", epoch, -1.0)
            self._save("latest", epoch, -1.0, eval_pending=due)
            if due:
                self._evaluate_and_record(epoch, record)
            self.history.append(record)
        with distributed.peer_guard("waiting for every rank at the end of training"):
            distributed.barrier()
        if self.visualdl is not None:
            self.visualdl.flush()  # on disk now: a tool's process ends without the interpreter's teardown
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "history": self.history}
