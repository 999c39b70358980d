"""Right after `make` installs llama-cpp-python: check that the build is the portable one it asked for, and
that the server it brings answers one real chat completion. A build that crashes on this CPU fails here, in
one clear message, instead of deep inside the LLM tests (see the Makefile's LLAMA_CMAKE_ARGS).

    python tests/check_llama_server.py WHEEL_FOLDER
"""

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import llama_server  # noqa: E402

#: Instruction sets a portable x86-64 build must not be compiled for: AMX kernels crashed llama.cpp's
#: native build on a CPU that reports them, and AVX-512 is missing on many x86-64 CPUs.
NOT_PORTABLE = ("AMX_INT8 = 1", "AVX512 = 1")


def main(wheels: str) -> int:
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(f"llama-cpp-python {llama_cpp.__version__}: {system}")
    if platform.machine() in ("x86_64", "AMD64") and (found := [f for f in NOT_PORTABLE if f in system]):
        print(f"error: the installed llama.cpp was built for this CPU ({', '.join(found)}), not portably: "
              f"the build options did not reach the build. Remove {wheels} and run make again.", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        with llama_server() as server:
            answer = server.complete()
            server.check()
    except AssertionError as err:
        print(f"error: the freshly installed llama_cpp.server cannot serve a completion on this machine.\n{err}\n"
              f"Remove {wheels} and run make again; if it fails again, change LLAMA_CMAKE_ARGS in the Makefile.",
              file=sys.stderr)
        return 1
    text = answer["choices"][0]["message"]["content"]
    print(f"llama_cpp.server answered one completion in {time.perf_counter() - started:.1f} s: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "the cached llama-cpp-python wheel folder"))
