"""A pack's W&B runs: opened in one logging process while the first chunk trains, ended as a single run's are.

The MLP pack (loop.py) and the task pack and range_test's packed seeds (functional.py) train their members
through `run_members`; it sits apart from both so that neither imports the other for it.
"""

from __future__ import annotations

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.logger import open_pack_logger
from lrscan.pipeline.pack.members import FAILED, KILLED, PackMember, write_end
from lrscan.pipeline.train.loop import StopRequested, exit_code_of
from lrscan.pipeline.train.tracking import Launch, RunInfo


def run_members(members: list[PackMember], program: str, train, fork_logger: bool = False) -> dict[str, dict]:
    """Open every member's run, `train(members)` (-> summaries by run id), and end the runs as the single
    trainer does: a failure or a stop ends each member's run still open with its exit code and end file.
    fork_logger: the logging process is forked from this one (tracking.ForkedProcess), not started fresh."""
    # init logging: one process, one wandb run per member
    logger = open_pack_logger([m.init_args(Launch(program=program, args=m.point.args)) for m in members],
                              fork=fork_logger)
    opening = {"done": False}

    def open_runs() -> None:
        # once, at the first use of any member's run: training starts while the logger process runs wandb.init
        if opening["done"]:
            return
        opening["done"] = True
        opened = logger.start()
        for k, (member, info) in enumerate(zip(members, opened)):
            if isinstance(info, RunInfo):
                member.attach(logger.member(k), info)
        failed = [(m, info) for m, info in zip(members, opened) if isinstance(info, str)]
        if failed:
            raise LrscanError(f"run {failed[0][0].run_id}: wandb.init failed: {failed[0][1]}")

    for member in members:
        member.attach_when_used(open_runs)
    try:
        summaries = train(members)
    except BaseException as error:
        code = exit_code_of(error)
        stopped = isinstance(error, (StopRequested, KeyboardInterrupt))
        unfinished: list[str] = []
        for member in members:
            if not member.ended:
                try:
                    member.logger_finish(code)
                except Exception as e:  # the runs never opened (the logging process failed): say so, go on
                    unfinished.append(str(e))
                write_end(member.point, KILLED if stopped else FAILED, code, _one_line(error))
        if unfinished and str(error) != unfinished[0]:
            error.add_note(f"also, the W&B runs could not be opened: {unfinished[0]}")
        try:
            logger.close(code)
        except Exception as e:
            error.add_note(f"also, the W&B runs could not be finished: {e}")
        raise
    logger.close(0)
    if logger.finish_errors:
        for k, why in logger.finish_errors.items():
            write_end(members[k].point, FAILED, 1, f"the W&B run could not be finished: {why}")
        raise LrscanError("; ".join(f"run {members[k].run_id}: the W&B run could not be finished: {why}"
                                    for k, why in logger.finish_errors.items()))
    return summaries


def _one_line(error: BaseException) -> str:
    return "; ".join([str(error) or type(error).__name__, *getattr(error, "__notes__", ())])
