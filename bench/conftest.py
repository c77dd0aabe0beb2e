"""pytest hooks of the benchmark suites: the --bench-full flag and the summary tables at the end
of the session. The machinery itself is in harness.py."""

import harness


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", default=False,
                     help="sedd-kernels benchmarks: the full CPU matrix (bench/README.md's CPU tables; "
                          "an hour or more on 2 cores) instead of the quick default (<= 10 min); "
                          "same as SEDD_BENCH_FULL=1. CUDA devices always run the GPU set.")


def pytest_configure(config):
    harness.set_full(config.getoption("--bench-full", default=False))


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    harness.summary(lambda title: tr.section(title), tr.write_line)
