"""Type stub for the compiled Cython module ``ce_fast._dlpack`` (src/_dlpack.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def from_dlpack(obj: Any, bfloat16: np.dtype[Any]) -> npt.NDArray[Any]: ...
