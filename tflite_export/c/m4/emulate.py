"""Build the C decoder's Cortex-M4 test program and run it under QEMU's MPS2 AN386 board.

The program (``kcz_m4.c``, ``startup.c``, ``mps2_an386.ld``) links ``kcz_decode`` with a
skeleton and a sidecar placed in flash, decodes them bare-metal and streams the model out
through semihosting; see ``kcz_m4.c``. Needs Debian's ``gcc-arm-none-eabi``,
``libnewlib-arm-none-eabi`` and ``qemu-system-arm``; no Python package beyond the standard
library, so the tests and ``benchmarks/codec.py`` load this file by its path.

    python tflite_export/c/m4/emulate.py MODEL.skeleton MODEL.kcz [--opt -O2] [--pad 1]

prints what the device reported (JSON) and writes the decoded model to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
C_SOURCE = HERE.parent
GCC, QEMU = "arm-none-eabi-gcc", "qemu-system-arm"
CPU = ["-mcpu=cortex-m4", "-mthumb"]
INSTALL = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


def missing_tools() -> str | None:
    """Why the program cannot be built or run here, or ``None``."""
    absent = [tool for tool in (GCC, QEMU) if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not found: {INSTALL}"
    return None


@dataclass
class Firmware:
    """A linked program: its ELF, sections' sizes, decoder's code bytes, ``code_flags``."""

    elf: Path
    sections: dict[str, int]
    decoder_code_bytes: int
    flags: list[str] = field(default_factory=list)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}{done.stderr}")
    return done


def code_flags(opt: str, defines: tuple[str, ...], strict_alignment: bool) -> list[str]:
    """The compiler flags that change the decoder's code: core, alignment, level, defines."""
    if strict_alignment:
        defines = (*defines, "KCZ_TRAP_UNALIGNED")
    alignment = ["-mno-unaligned-access"] if strict_alignment else []
    return [*CPU, *alignment, opt, *(f"-D{d}" for d in defines)]


def compile_objects(
    work: Path, opt: str = "-Os", defines: tuple[str, ...] = (), strict_alignment: bool = False
) -> list[Path]:
    """Compile the decoder and the program (not the model) once for ``opt`` and ``defines``.

    ``strict_alignment``: no unaligned accesses in the code (``-mno-unaligned-access``) and the
    core traps any (as a Cortex-M0 would fault): C code that reads a byte buffer through a wider
    pointer then fails.
    """
    work.mkdir(parents=True, exist_ok=True)
    flags = [*code_flags(opt, defines, strict_alignment), "-std=c99", "-g", "-Wall", "-Wextra",
             "-Werror", "-ffunction-sections", "-fdata-sections", "-I", C_SOURCE]  # fmt: skip
    objects = []
    for source in (C_SOURCE / "kcz_decode.c", HERE / "startup.c", HERE / "kcz_m4.c"):
        obj = work / f"{source.stem}.o"
        _run([GCC, *flags, "-c", source, "-o", obj])
        objects.append(obj)
    return objects


def link(objects: list[Path], skeleton: Path, sidecar: Path, elf: Path, pad: int = 0) -> Firmware:
    """Link the objects with ``skeleton`` and ``sidecar`` in flash (``pad`` bytes off a word)."""
    if not 0 <= pad <= 3:
        raise ValueError(f"pad must be 0 to 3 bytes, got {pad}")
    blobs = elf.with_suffix(".blobs.o")
    _run([GCC, *CPU, "-c", HERE / "kcz_blobs.S", "-o", blobs, f"-DKCZ_PAD={pad}",
          f'-DKCZ_SKELETON_FILE="{Path(skeleton).resolve()}"',
          f'-DKCZ_SIDECAR_FILE="{Path(sidecar).resolve()}"'])  # fmt: skip
    _run([GCC, *CPU, "-nostartfiles", "--specs=nano.specs", "-T", HERE / "mps2_an386.ld",
          "-Wl,--gc-sections", f"-Wl,-Map={elf.with_suffix('.map')}", "-o", elf, *objects,
          blobs])  # fmt: skip
    sections = {}
    for line in _run(["arm-none-eabi-size", "-A", elf]).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    decoder = {
        line.split()[-1]
        for line in _run(["arm-none-eabi-nm", "--defined-only", objects[0]]).stdout.splitlines()
        if line.split()[-2] in "Tt"
    }
    code = sum(
        int(size, 16)
        for _, size, kind, name in (
            line.split()
            for line in _run(["arm-none-eabi-nm", "-S", elf]).stdout.splitlines()
            if len(line.split()) == 4
        )
        if kind in "Tt" and name in decoder
    )
    return Firmware(elf, sections, code)


def run(firmware: Firmware, timeout: float = 120) -> dict:
    """Run the program under QEMU: the device's ``key=value`` report, derived counts, output.

    ``instructions``: the decoder's instructions (SysTick ticks times the instructions per
    tick that the calibration loop measured; QEMU's ``-icount shift=0`` makes one instruction
    one nanosecond of the emulated clock, so this is an instruction count, give or take one
    tick). ``output``: the bytes the device streamed out (``None`` if it wrote none).
    """
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [QEMU, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
               "-kernel", firmware.elf]  # fmt: skip
        done = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        out = Path(cwd) / "kcz_out.bin"
        output = out.read_bytes() if out.exists() else None
    report: dict = {"status": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    for line in (done.stdout + done.stderr).splitlines():  # semihosting prints to stderr
        key, sep, value = line.partition("=")
        if sep:
            report[key] = value if key in ("error", "sidecar_address", "crc32") else _number(value)
    if "decode_ticks" in report:
        per_tick = report["calibration_instructions"] / report["calibration_ticks"]
        report["instructions_per_tick"] = per_tick
        report["instructions"] = round(report["decode_ticks"] * per_tick)
    report["output"] = output
    return report


def _number(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def decode(
    skeleton: Path,
    sidecar: Path,
    work: Path,
    opt: str = "-Os",
    defines: tuple[str, ...] = (),
    pad: int = 0,
    strict_alignment: bool = False,
    timeout: float = 120,
) -> tuple[Firmware, dict]:
    """Build (see ``compile_objects``), link the two files, run: the firmware and its report."""
    objects = compile_objects(work, opt, defines, strict_alignment)
    firmware = link(objects, skeleton, sidecar, work / "kcz_m4.elf", pad)
    firmware.flags = code_flags(opt, defines, strict_alignment)
    return firmware, run(firmware, timeout)


def main() -> None:
    """Build and run for the given files; print the device's report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("skeleton", type=Path)
    parser.add_argument("sidecar", type=Path)
    parser.add_argument("--opt", default="-Os", help="-Os (default) or -O2, ...")
    parser.add_argument("-D", dest="defines", action="append", default=[], help="NAME=VALUE")
    parser.add_argument("--pad", type=int, default=0, help="bytes off a word boundary (0-3)")
    parser.add_argument("--strict-alignment", action="store_true", help="trap unaligned access")
    parser.add_argument("--out", type=Path, help="write the decoded model here")
    args = parser.parse_args()
    reason = missing_tools()
    if reason:
        raise SystemExit(reason)
    work = Path(tempfile.mkdtemp(prefix="kcz_m4_"))
    firmware, report = decode(
        args.skeleton,
        args.sidecar,
        work,
        args.opt,
        tuple(args.defines),
        args.pad,
        args.strict_alignment,
    )
    output = report.pop("output")
    if output is not None and args.out:
        args.out.write_bytes(output)
    if output is not None:
        report["host_crc32"] = f"{zlib.crc32(output):x}"
    report.pop("stdout")
    report.pop("stderr")
    print(json.dumps({"elf": str(firmware.elf), "sections": firmware.sections,
                      "decoder_code_bytes": firmware.decoder_code_bytes, **report},
                     indent=1))  # fmt: skip
    raise SystemExit(report["status"])


if __name__ == "__main__":
    main()
