#!/usr/bin/env python
"""Coverage-guided fuzzing of the ce_fast public API with atheris (libFuzzer).

Each input is a byte string decoded (atheris.FuzzedDataProvider) into one
call: function, shapes (0-length axes included), dtypes (valid and invalid),
memory layouts (transposed, strided, negative strides, unaligned,
byte-swapped, read-only, lists), options (reduction, label_smoothing,
z_loss, softcap, weight/sample_weight incl. zero/negative/NaN, ignore_index,
out-of-range and huge labels, uint64 labels > 2**63, grad_output, num_threads,
out= buffers incl. aliasing the logits) -- see tests/robustness/_oracle.py.
The call is run through ``ce_fast.reference`` and ``ce_fast`` and checked:
same documented exception kind, or results equal within tolerance with
identical NaN/inf positions, inputs unmodified.

A crash (signal), a hang (libFuzzer -timeout) or an undocumented exception
stops the fuzzer and leaves a crash-* reproducer. Oracle mismatches (a wrong
value or a different exception kind) are written, deduplicated by signature,
to $FUZZ_FINDINGS (default tools/robustness/findings/) and fuzzing continues,
unless FUZZ_STOP_ON_MISMATCH=1.

    python tools/robustness/fuzz_atheris.py CORPUS_DIR -max_total_time=600
    python tools/robustness/fuzz_atheris.py crash-XXXX      # replay one input
Python-level coverage (ce_fast's validation layer and the oracle) guides the
search; the C kernels are not instrumented (build them with clang
-fsanitize=fuzzer-no-link for native coverage).
"""

import hashlib
import os
import re
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

with atheris.instrument_imports(include=["ce_fast", "tests.robustness._oracle"]):
    import ce_fast  # noqa: F401
    from tests.robustness import _oracle

FINDINGS = os.environ.get("FUZZ_FINDINGS", os.path.join(HERE, "findings"))
STOP = os.environ.get("FUZZ_STOP_ON_MISMATCH") == "1"
_seen = set()
_stats = {"runs": 0, "ok": 0, "raise": 0, "mismatch": 0}


def _signature(msg: str) -> str:
    # the function name plus the message with numbers stripped
    head = msg.split("(", 2)[1].split(",", 1)[0] if msg.startswith("Case(") else ""
    tail = msg.rsplit("})", 1)[-1]
    return head + re.sub(r"[-+]?\d[\d.]*(e[-+]?\d+)?|nan|inf", "#", tail)[:160]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    case = _oracle.make_case(_oracle.AtherisChooser(fdp))
    _stats["runs"] += 1
    try:
        tag = _oracle.check_case(case)
    except _oracle.Mismatch as exc:
        msg = str(exc)
        if "undocumented" in msg or STOP:
            raise
        _stats["mismatch"] += 1
        sig = _signature(msg)
        if sig not in _seen:
            _seen.add(sig)
            os.makedirs(FINDINGS, exist_ok=True)
            h = hashlib.sha1(data).hexdigest()[:12]
            with open(os.path.join(FINDINGS, f"mismatch-{h}.bin"), "wb") as f:
                f.write(data)
            with open(os.path.join(FINDINGS, f"mismatch-{h}.txt"), "w") as f:
                f.write(sig + "\n\n" + msg + "\n")
            print(f"\n[fuzz] new mismatch signature: {sig}\n", file=sys.stderr, flush=True)
        return
    _stats["ok" if tag == "ok" else "raise"] += 1
    if _stats["runs"] % 20000 == 0:
        print(f"[fuzz] {_stats}", file=sys.stderr, flush=True)


def main() -> None:
    import atexit

    atexit.register(lambda: print(f"[fuzz] final {_stats}", file=sys.stderr, flush=True))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
