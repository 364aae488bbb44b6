"""Test-wide settings."""

import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# A shell without job control starts a background command (`.ci/run &`, a CI step sent to the
# background) with SIGINT ignored, and every child a test starts inherits that: the tests that send a
# program Ctrl-C (tests/cli/test_interrupt_*.py, the profile's stop tests) then saw it ignored and
# failed. The tests run as if started from a terminal; a test wanting SIGINT ignored sets it itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow: end-to-end compiles and exports whose mechanism a faster test "
        "of the default run covers (README, 'Set-up')",
    )


#: Why a ``slow`` test is skipped: the default run (the README's test command, CI) must stay within
#: 10 minutes on 2 cores; ``--slow`` runs the whole suite.
SLOW_REASON = "slow: an end-to-end compile or export whose mechanism a faster test covers; run with --slow"


def pytest_configure(config: pytest.Config) -> None:
    """``-n auto`` (xdist) hands tests out by work stealing, not by its default ``load`` batches: those
    left one worker running a queue of the slowest tests (inductor compiles, 1-3 min each with a cold
    cache) for the last six minutes of the suite while the other idled. Read before xdist's own configure
    (``trylast``) starts the workers; ``--dist`` set to anything but ``load`` is kept."""
    if getattr(config.option, "dist", None) == "load" and getattr(config.option, "numprocesses", None):
        config.option.dist = "worksteal"
    config.addinivalue_line("markers", f"slow: skipped unless --slow is given ({SLOW_REASON})")


#: Files of the longest tests (fullgraph torch.compile traces, the pipeline's runs, the kernel benchmark's
#: dry run), run first: a worker that steals work takes it from the end of another's queue, so the suite
#: then ends on short tests instead of one worker finishing a compile while the other idles.
SLOW_FIRST = (
    "tests/exporters/test_torch_export.py",
    "tests/cli/test_pipeline.py",
    "tests/bench/test_kernel_dry_run.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """:data:`SLOW_FIRST` first, in that order, each file's tests in theirs; the rest as collected. Tests
    marked ``slow`` are skipped (:data:`SLOW_REASON`) unless ``--slow`` is given."""
    first = {config.rootpath / name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: first.get(item.path, len(SLOW_FIRST)))  # stable: any other order is kept
    if not config.getoption("slow"):
        skip = pytest.mark.skip(reason=SLOW_REASON)
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole session (module-scoped fixtures included): tests run on
    tiny tensors, where a second thread only adds contention (measured here: 0.4 s vs 2 ms for
    one small forward pass on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _no_pyg_templates_left():
    """PyG renders the ``propagate`` (and ``edge_updater``) of each MessagePassing class into a file of
    the temp directory as the class's first instance is built, ``NamedTemporaryFile(delete=False)``
    named ``MODULE_XXXXXXXX.py`` for the module it loads from it (``torch_geometric.template.
    module_from_template``), and never removes it: each session left one a class, the tests' own
    (``_GatedGINE``) and PyG's (GINEConv, GATConv...). They are removed when the session ends, the
    modules having been loaded from them; the files are known by that name, of a loaded module."""
    yield
    if "torch_geometric.template" not in sys.modules:  # nothing rendered
        return
    temp = Path(tempfile.gettempdir()).resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        path = Path(file)
        if path.suffix == ".py" and path.name.startswith(f"{name}_") and path.parent.resolve() == temp:
            path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def model_config_pb2():
    """Triton's own ``ModelConfig`` protobuf module, loaded from tritonclient without its grpc extra."""
    import importlib.util
    from pathlib import Path

    tc = importlib.util.find_spec("tritonclient")
    if tc is None or tc.origin is None:
        pytest.skip("tritonclient is not installed (pip install 'gtcompress[serve]')")
    path = Path(tc.origin).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
