"""Thread settings that must be in place before NumPy and Numba are imported.

Numba's OpenMP threads and OpenBLAS's threads both spin while they wait; on a
2-core machine they fight and one LeNet iteration takes 4-5x longer (see
PERFORMANCE_NOTES).  Telling both to sleep when idle removes that.  A user's own
settings win: we only fill in what is unset.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


class BusyMachineGuard:
    """Hold BLAS to one thread while the machine is busier than it has cores, and give the threads
    back once it is quiet again.

    OpenBLAS's threads meet at a barrier after every product.  When other programs keep every core
    busy, each barrier waits for a descheduled thread's next time slice: on 2 cores with two busy
    processes one LeNet forward-backward took 170 ms with two BLAS threads and 22 ms with one
    (16 ms with one Numba thread as well); with the machine idle two threads are faster.

    ``tick()`` is called once per training iteration and, every ``every`` calls, looks at how many
    threads are runnable right now (Linux's /proc/loadavg; elsewhere the 1-minute load average): two
    looks in a row above ``cpus + 0.75`` put BLAS on one thread, two below ``cpus - 0.25`` give it its
    threads back (the gap keeps it from flapping, since our own threads count too).  Off when
    ``PLITE_ADAPT_THREADS=0``, when threadpoolctl is missing, or on one CPU.  ``load`` may be replaced
    (tests).
    """

    def __init__(self, every: int = 50, cpus: int | None = None, load=None) -> None:
        self.every = max(1, int(every))
        self.cpus = cpus if cpus is not None else available_cpus()
        self.load = load or _runnable_now
        self._streak = 0  # consecutive looks that asked for the other state
        self.limited = False
        self._calls = 0
        self._limit = None  # the threadpoolctl context while limited
        self.enabled = os.environ.get("PLITE_ADAPT_THREADS", "1") != "0" and self.cpus >= 2

    def tick(self) -> None:
        self._calls += 1
        if not self.enabled or self._calls % self.every:
            return
        try:
            load = float(self.load())
        except OSError:  # no load average on this system
            self.enabled = False
            return
        flip = load > self.cpus + 0.75 if not self.limited else load < self.cpus - 0.25
        self._streak = self._streak + 1 if flip else 0
        if self._streak >= 2:  # two looks in a row: one sample of a busy moment is not a busy machine
            self._streak = 0
            self._set(not self.limited, load)

    def _set(self, limit: bool, load: float) -> None:
        import logging

        log = logging.getLogger("pycaffe_lite")
        if limit:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                self.enabled = False
                return
            self._limit = threadpool_limits(limits=1, user_api="blas")
            log.info("Machine busy (load %.2f on %d CPUs): BLAS on one thread until it is quiet "
                     "(PLITE_ADAPT_THREADS=0 turns this off)", load, self.cpus)
        else:
            if self._limit is not None:
                self._limit.restore_original_limits()
                self._limit = None
            log.info("Machine quiet again (load %.2f on %d CPUs): BLAS threads restored", load, self.cpus)
        self.limited = limit

    def close(self) -> None:
        """Give BLAS its threads back (end of training)."""
        if self._limit is not None:
            self._limit.restore_original_limits()
            self._limit = None
        self.limited = False


def _runnable_now() -> float:
    """Threads runnable at this instant (the 4th field of /proc/loadavg, "R/total"), else the
    1-minute load average."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0]


def available_cpus() -> int:
    """Processors this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: threadpoolctl's BLAS library controllers, looked up once (False: threadpoolctl is not installed)
_BLAS_LIBS = None


def blas_libs():
    """threadpoolctl's controllers of the BLAS libraries loaded in this process ((): none, or no
    threadpoolctl)."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_LIBS = False
        else:
            _BLAS_LIBS = ThreadpoolController().select(user_api="blas").lib_controllers
    return _BLAS_LIBS or ()


class SerialBlas:
    """A context in which BLAS runs on one thread (a no-op without threadpoolctl).  The RBM and
    recurrent layers make many small products; BLAS's own threads meet in every one of them, and
    while other processes held the cores that made them 5-130x slower (RBM forward 205 vs 2.1 ms;
    LSTM 24-310 vs 10 ms).  The libraries' own get/set calls (~2 us) rather than
    ``threadpool_limits`` (~25 us per use) keep the switch cheap at ~1,000 switches per second."""

    __slots__ = ("_saved",)

    def __enter__(self):
        self._saved = []
        for lib in blas_libs():
            n = lib.get_num_threads()
            if n != 1:
                lib.set_num_threads(1)
                self._saved.append((lib, n))
        return self

    def __exit__(self, *exc) -> None:
        for lib, n in self._saved:
            lib.set_num_threads(n)
