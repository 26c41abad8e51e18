"""raykit/interrupts.py without a Ray run: which signal, which exit code, which line, which handler; and a
sweep passing both signals to Tune's graceful stop. (Through the real CLI and Ray: test_interrupts_ray.py.)"""

from __future__ import annotations

import os
import signal

import pytest

from raykit import interrupts
from raykit.interrupts import Interrupted


def send(signum: int) -> None:
    """Deliver ``signum`` to this process; Python runs its handler in the main thread right after."""
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_with_its_exit_code_and_the_handlers_come_back(signum, code):
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with pytest.raises(Interrupted) as raised:
        with interrupts.signals_raise():
            send(signum)
    assert raised.value.signum == signum and interrupts.exit_code(raised.value) == code
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before


def test_a_plain_keyboard_interrupt_after_sigterm_still_names_sigterm():
    # Ray's ray.get turns the exception a handler raises into a plain KeyboardInterrupt.
    with pytest.raises(Interrupted) as raised:
        with interrupts.signals_raise(), interrupts.resumable("exp1"):
            try:
                send(signal.SIGTERM)
            except Interrupted:
                raise KeyboardInterrupt from None
    assert raised.value.signum == signal.SIGTERM and raised.value.run_name == "exp1"
    line = interrupts.message(raised.value, ["raykit", "train", "my.yaml"])
    assert line == "raykit: interrupted by SIGTERM; resume the run with the same name: raykit train my.yaml " \
                   "--set name=exp1"
    assert interrupts.message(raised.value, ["raykit", "train", "--set", "name=exp1"]).endswith(
        "raykit train --set name=exp1")  # the name given already is not repeated


def test_the_first_signal_aborts_once_and_raises_a_second_skips_the_abort():
    aborted = []
    with interrupts.handlers_restored():
        interrupts.abort_then_raise(lambda: aborted.append(1))
        for signum in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(Interrupted) as raised:
                send(signum)
            assert raised.value.signum == signum
    assert aborted == [1]


def test_a_sweep_passes_both_signals_to_tune_s_graceful_stop_then_raises(monkeypatch):
    from raykit.ray.tune import _TUNE_SIGINT_OFF, _stop_gracefully_on_signals

    monkeypatch.delenv(_TUNE_SIGINT_OFF, raising=False)
    usr1 = signal.getsignal(signal.SIGUSR1)  # an earlier sweep in this process leaves Tune's installed
    stopped = []
    with pytest.raises(Interrupted) as raised:
        with _stop_gracefully_on_signals() as signalled:
            assert os.environ[_TUNE_SIGINT_OFF] == "1"  # Tune's own SIGINT handler would swallow the signal
            signal.signal(signal.SIGUSR1, lambda signum, frame: stopped.append(signum))  # as Tuner.fit does
            send(signal.SIGTERM)
            assert stopped == [signal.SIGTERM]  # Tune stops gracefully; fit returns
        signalled.raise_if_signalled()
    assert raised.value.signum == signal.SIGTERM
    assert _TUNE_SIGINT_OFF not in os.environ and signal.getsignal(signal.SIGUSR1) == usr1


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_ray_init_waits_for_it_and_threads_it_starts_never_get_one(signum, code):
    """cluster.connect wraps ray.init in deferred(): a Ctrl-C there hung the driver for good on CI."""
    import threading

    masks = []
    with pytest.raises(Interrupted) as raised:
        with interrupts.signals_raise():
            with interrupts.deferred():
                os.kill(os.getpid(), signum)  # arrives now: held back, nothing raised here
                thread = threading.Thread(target=lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
                thread.start()
                thread.join()
                finished = True
            assert False, "the held-back signal was not delivered as the block ended"
    assert finished and raised.value.exit_code == code
    assert {signal.SIGINT, signal.SIGTERM} <= masks[0]  # a thread started inside has both blocked
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the main thread's mask is back
