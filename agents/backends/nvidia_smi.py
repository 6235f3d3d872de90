"""Read GPUs through ``nvidia-smi -q -x``: live on this host, or from a saved capture.

Why a second backend next to NVML: ``nvidia-smi`` ships with every driver, so it works
where the NVML Python binding is missing, and support staff can parse a customer's
``nvidia-smi -q -x > capture.xml`` with exactly the code the agent runs.

The XML has changed across drivers (DTDs ``nvsmi_device_v8`` to ``v13``). Each field is
read from every place a known generation puts it, newest first:

========================  =============================================================
Field                     Elements read, first reported value wins
========================  =============================================================
index                     the GPU's position in the document, which is the NVML index
                          (``<minor_number>`` is the ``/dev/nvidiaN`` number: it can
                          differ, for example inside a container, and is N/A on Windows)
pci_bus_id                ``pci/pci_bus_id``, else the ``<gpu id="...">`` attribute (as
                          printed: v8 and older print a 4-digit domain, ``0000:85:00.0``)
board_part_number         ``board_part_number``; if absent (older drivers),
                          ``gpu_part_number``, which then held the board's number
power_limit_w             ``gpu_power_readings/current_power_limit`` (v12+), else
                          ``power_readings/enforced_power_limit``, ``power_limit``
power_w                   ``gpu_power_readings/instant_power_draw``, ``power_draw``,
                          ``average_power_draw``, else ``power_readings/power_draw``
ecc_uncorrected_errors    ``ecc_errors/volatile``: ``double_bit/total`` (v8 to v11), else
                          ``dram_uncorrectable`` plus ``sram_uncorrectable`` (v12, and
                          already v11 on Ampere boards such as the A100) or
                          ``sram_uncorrectable_parity`` + ``_secded`` (v13)
mig_devices               ``mig_devices/mig_device``: ``index``, ``gpu_instance_id``,
                          ``compute_instance_id`` and ``fb_memory_usage/total``
========================  =============================================================

What the XML does not carry stays ``None`` here and comes from NVML instead: the compute
capability, the confidential-computing mode (``nvidia-smi conf-compute`` reports it, not
``-q``), and a MIG device's profile name and UUID (``-q -x`` gives only its instance ids).

A value nvidia-smi cannot read is ``None``, never an error: ``N/A``, ``Not Supported``,
an empty element, or any value in square brackets (``[N/A]``, ``[Not Supported]``,
``[Unknown Error]``, ``[Insufficient Permissions]``: nvidia-smi's bracketed sentinels).
Elements this module does not know are ignored. Only the document as a whole can fail,
and then as :class:`BackendUnavailableError` with a one-line reason.

A capture may come from anyone (a customer's file sent to support), so reading and parsing
are bounded, and each bound is checked as the input arrives, so a hostile document costs at
most what the bound allows, not what the document asks for:

==========================  ==========  ===================================================
Bound                       Limit       Real ``nvidia-smi -q -x`` output
==========================  ==========  ===================================================
document size               16 MiB      4-33 KB per recorded capture (one to four GPUs);
                                        an 8-GPU HGX with MIG and a full process list is a
                                        few hundred KB, a 16-GPU one about 1 MiB
elements and attributes     100,000     about 500 elements per GPU and one attribute
                                        (``<gpu id=...>``); 805 for four H100s
element depth               32 levels   7 (``mig_devices/mig_device/...``)
one tag or declaration      64 KiB      under 100 bytes
internal DTD subset         refused     never printed (it is how entities and default
                                        attributes are declared: expansion attacks)
==========================  ==========  ===================================================
"""

import os
import re
import selectors
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TypeVar
from xml.parsers import expat

from agents.backends.base import BackendUnavailableError
from agents.protocol import GpuInventory, GpuTelemetry, MigDevice

_T = TypeVar("_T")

#: Values meaning "not available", compared case-insensitively (brackets handled apart).
_NULL_VALUES = frozenset({"", "n/a", "not supported"})
#: A number, then an optional unit: "81559 MiB", "69.95 W", "-8 C", "0 %".
_QUANTITY = re.compile(r"(-?\d+(?:\.\d+)?)\s*(\S*)")
_BYTES_PER_UNIT = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
#: How much of a failing command's message to quote in the one-line reason.
_DETAIL_CHARS = 200

# The bounds in the module docstring's table: each far above real output, so only a broken
# or hostile document meets one; each small enough that meeting it costs little.
#: The most bytes read from a capture or the command: 16 times a 16-GPU server's output.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
#: Elements plus attributes: each becomes an object kept until the GPUs are read (about
#: 300 bytes each, so 30 MB at the limit); a 16-GPU server with full process lists has
#: under 30,000.
MAX_NODES = 100_000
#: Nesting depth, counting the root as 1; real output nests 7 deep.
MAX_ELEMENT_DEPTH = 32
#: The longest single tag, comment or declaration: expat builds a tag's attributes only
#: once the tag is complete, so without this one tag could hold the whole document's worth.
MAX_TOKEN_BYTES = 64 * 1024
#: Characters handed to expat, or bytes read from the command, at a time: a bound is met
#: within one chunk of the excess.
_CHUNK_SIZE = 64 * 1024


def _is_null(value: str) -> bool:
    """True for nvidia-smi's ways of saying a value could not be read."""
    return value.lower() in _NULL_VALUES or (value.startswith("[") and value.endswith("]"))


def _text(parent: ET.Element, path: str) -> str | None:
    """The stripped text at ``path`` under ``parent``; ``None`` if absent or a null value."""
    node = parent.find(path)
    if node is None:
        return None
    value = (node.text or "").strip()
    return None if _is_null(value) else value


def _first(*values: _T | None) -> _T | None:
    """The first value that is not ``None``: read a field from newest to oldest layout."""
    return next((value for value in values if value is not None), None)


def _quantity(value: str | None, unit: str) -> float | None:
    """The number in ``"<number> <unit>"``; ``None`` when absent or in another unit."""
    if value is None:
        return None
    match = _QUANTITY.fullmatch(value)
    if match is None or match.group(2) != unit:
        return None
    return float(match.group(1))


def _bytes(value: str | None) -> int | None:
    """``"81559 MiB"`` as bytes (binary units, as nvidia-smi prints them)."""
    if value is None:
        return None
    match = _QUANTITY.fullmatch(value)
    if match is None or match.group(2) not in _BYTES_PER_UNIT:
        return None
    return int(float(match.group(1)) * _BYTES_PER_UNIT[match.group(2)])


def _count(value: str | None) -> int | None:
    """A plain non-negative integer such as an error counter or an instance index."""
    return int(value) if value is not None and value.isdigit() else None


def _sum_reported(*counts: int | None) -> int | None:
    """The sum of the counters that were reported; ``None`` if none was."""
    reported = [count for count in counts if count is not None]
    return sum(reported) if reported else None


def _switch(value: str | None) -> str | None:
    """A mode printed ``Enabled``/``Disabled`` as "enabled"/"disabled"; anything else ``None``."""
    state = None if value is None else value.lower()
    return state if state in ("enabled", "disabled") else None


def _ecc_uncorrected(gpu: ET.Element) -> int | None:
    """Uncorrectable ECC errors since the driver loaded, in any generation's layout."""
    volatile = gpu.find("ecc_errors/volatile")
    if volatile is None:
        return None
    legacy = volatile.find("double_bit")
    if legacy is not None:
        return _count(_text(legacy, "total"))
    sram = _first(
        _count(_text(volatile, "sram_uncorrectable")),
        _sum_reported(
            _count(_text(volatile, "sram_uncorrectable_parity")),
            _count(_text(volatile, "sram_uncorrectable_secded")),
        ),
    )
    return _sum_reported(_count(_text(volatile, "dram_uncorrectable")), sram)


def _process_count(gpu: ET.Element) -> int | None:
    """Processes using the GPU; ``None`` when the driver does not list them."""
    processes = gpu.find("processes")
    if processes is None:
        return None
    entries = processes.findall("process_info")
    marker = (processes.text or "").strip()
    if not entries and marker and _is_null(marker):
        return None  # "<processes>N/A</processes>": not listed, which is not zero
    return len(entries)


def _mig_devices(gpu: ET.Element) -> tuple[MigDevice, ...]:
    """The MIG instances listed under the GPU (none when MIG is off or unsupported)."""
    devices = []
    for position, node in enumerate(gpu.findall("mig_devices/mig_device")):
        index = _count(_text(node, "index"))
        devices.append(
            MigDevice(
                index=position if index is None else index,
                gpu_instance_id=_count(_text(node, "gpu_instance_id")),
                compute_instance_id=_count(_text(node, "compute_instance_id")),
                memory_total_bytes=_bytes(_text(node, "fb_memory_usage/total")),
            )
        )
    return tuple(devices)


def _board_part_number(gpu: ET.Element) -> str | None:
    """The board's part number (``900-...``/``965-...``), as each generation names it.

    Drivers before ``<board_part_number>`` existed printed the board's number as
    ``<gpu_part_number>``; newer ones use that element for the chip's own part number, so
    it is read only when ``<board_part_number>`` is absent altogether.
    """
    if gpu.find("board_part_number") is not None:
        return _text(gpu, "board_part_number")
    return _text(gpu, "gpu_part_number")


def _required(gpu: ET.Element, path: str, position: int, source: str) -> str:
    """A value no real GPU lacks; its absence means the document is not a usable capture."""
    value = _text(gpu, path)
    if value is None:
        raise BackendUnavailableError(f"{source}: GPU {position} has no <{path}>")
    return value


def _static(
    gpu: ET.Element, position: int, driver: str | None, cuda: str | None, source: str
) -> GpuInventory:
    """One GPU's static facts."""
    readings = gpu.find("gpu_power_readings")
    legacy_readings = gpu.find("power_readings")
    return GpuInventory(
        index=position,
        uuid=_required(gpu, "uuid", position, source),
        model=_required(gpu, "product_name", position, source),
        serial=_text(gpu, "serial"),
        board_part_number=_board_part_number(gpu),
        vbios_version=_text(gpu, "vbios_version"),
        pci_bus_id=_first(_text(gpu, "pci/pci_bus_id"), _attribute(gpu, "id")),
        memory_total_bytes=_bytes(_text(gpu, "fb_memory_usage/total")),
        mig_mode=_switch(_text(gpu, "mig_mode/current_mig")),
        mig_devices=_mig_devices(gpu),
        ecc_mode=_switch(_text(gpu, "ecc_mode/current_ecc")),
        driver_version=driver,
        cuda_version=cuda,
        power_limit_w=_first(
            _watts(readings, "current_power_limit"),
            _watts(legacy_readings, "enforced_power_limit"),
            _watts(legacy_readings, "power_limit"),
        ),
    )


def _telemetry(gpu: ET.Element, uuid: str) -> GpuTelemetry:
    """One GPU's current readings."""
    readings = gpu.find("gpu_power_readings")
    return GpuTelemetry(
        uuid=uuid,
        utilization_pct=_quantity(_text(gpu, "utilization/gpu_util"), "%"),
        memory_used_bytes=_bytes(_text(gpu, "fb_memory_usage/used")),
        temperature_c=_quantity(_text(gpu, "temperature/gpu_temp"), "C"),
        power_w=_first(
            _watts(readings, "instant_power_draw"),
            _watts(readings, "power_draw"),
            _watts(readings, "average_power_draw"),
            _watts(gpu.find("power_readings"), "power_draw"),
        ),
        ecc_uncorrected_errors=_ecc_uncorrected(gpu),
        process_count=_process_count(gpu),
        fan_speed_pct=_quantity(_text(gpu, "fan_speed"), "%"),
    )


def _watts(parent: ET.Element | None, path: str) -> float | None:
    """A power reading in watts from a (possibly absent) power section."""
    return None if parent is None else _quantity(_text(parent, path), "W")


def _attribute(node: ET.Element, name: str) -> str | None:
    """An attribute's value, with nvidia-smi's null values as ``None``."""
    value = node.get(name, "").strip()
    return None if _is_null(value) else value


class _BoundedTreeBuilder:
    """Builds a document's element tree with expat, refusing it at the first bound it meets.

    ElementTree's own parser cannot count while it parses, nor see a DTD, so this drives
    expat directly and hands each event to an :class:`ET.TreeBuilder`: the tree is the one
    ``ET.fromstring`` builds for any document nvidia-smi prints. Every refusal is raised
    from inside expat's callback (which ends the parse) or between two chunks.
    """

    def __init__(self, source: str) -> None:
        self._source = source
        self._builder = ET.TreeBuilder()
        self._nodes = 0
        self._depth = 0
        self._parser = expat.ParserCreate(encoding="utf-8")
        self._parser.buffer_text = True  # one data call per text, not one per line
        self._parser.StartDoctypeDeclHandler = self._doctype
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._builder.data
        self._parser.SkippedEntityHandler = self._skipped_entity

    def parse(self, text: str) -> ET.Element:
        """The document's root element, or :class:`BackendUnavailableError` saying why not."""
        fed = 0
        try:
            # Chunks of characters, encoded one by one: expat counts positions in bytes.
            for offset in range(0, len(text), _CHUNK_SIZE):
                chunk = text[offset : offset + _CHUNK_SIZE].encode("utf-8")
                fed += len(chunk)
                self._parser.Parse(chunk, False)
                # Between calls expat's position is the start of the token it is still
                # waiting to complete: everything after it is that one token.
                if fed - max(self._parser.CurrentByteIndex, 0) > MAX_TOKEN_BYTES:
                    self._refuse(
                        f"has a tag or declaration longer than {MAX_TOKEN_BYTES // 1024} KiB"
                        " (nvidia-smi's are under 100 bytes)"
                    )
            self._parser.Parse(b"", True)
        except expat.ExpatError as error:
            reason = expat.ErrorString(error.code)
            raise BackendUnavailableError(
                f"{self._source} is malformed XML: {reason} at line {error.lineno},"
                f" column {error.offset}"
            ) from None
        return self._builder.close()

    def _refuse(self, what: str) -> NoReturn:
        """Stop with a one-line reason naming the bound the document broke."""
        raise BackendUnavailableError(f"{self._source} {what}; not parsing it")

    def _doctype(
        self, name: str, system_id: str | None, public_id: str | None, has_internal_subset: int
    ) -> None:
        """Refuse an internal DTD subset: entities and default attributes are declared there.

        Either can turn a few bytes into millions of characters or nodes (a thousand
        default attributes on an element that repeats). nvidia-smi's ``<!DOCTYPE
        nvidia_smi_log SYSTEM "nvsmi_device_v13.dtd">`` has none, and expat never fetches
        that external DTD.
        """
        if has_internal_subset:
            self._refuse(
                "has an internal DTD subset (XML entity or attribute declarations),"
                " which nvidia-smi never prints"
            )

    def _start(self, tag: str, attributes: dict[str, str]) -> None:
        """Open an element, counting it and its attributes against the bounds."""
        self._nodes += 1 + len(attributes)
        self._depth += 1
        if self._nodes > MAX_NODES:
            self._refuse(
                f"has more than {MAX_NODES:,} elements and attributes"
                " (nvidia-smi prints about 500 per GPU)"
            )
        if self._depth > MAX_ELEMENT_DEPTH:
            self._refuse(f"nests elements more than {MAX_ELEMENT_DEPTH} deep (nvidia-smi nests 7)")
        self._builder.start(tag, attributes)

    def _end(self, tag: str) -> None:
        """Close an element."""
        self._depth -= 1
        self._builder.end(tag)

    def _skipped_entity(self, name: str, is_parameter_entity: int) -> None:
        """Refuse a reference to an undeclared entity, as ``ET.fromstring`` does.

        Expat skips one silently when the document names an external DTD (as nvidia-smi's
        do), since that DTD might declare it; it would then vanish from the text.
        """
        raise BackendUnavailableError(
            f"{self._source} is malformed XML: undefined entity at line"
            f" {self._parser.CurrentLineNumber}, column {self._parser.CurrentColumnNumber}"
        )


def parse_nvidia_smi_xml(
    text: str, *, source: str = "nvidia-smi output"
) -> tuple[list[GpuInventory], list[GpuTelemetry]]:
    """Parse ``nvidia-smi -q -x`` output into each GPU's static facts and readings.

    Shared by the live backend, the capture reader and the replay backend, so all three
    report a given document identically. ``source`` names the document in error messages.
    Raises :class:`BackendUnavailableError` when the text is not well-formed XML (naming
    the line and column), breaks one of the module's bounds (naming it; the size bound is
    the reader's, as the text is already in memory here), is not ``nvidia-smi -q -x``
    output, or lists a GPU without a UUID or model name.
    """
    root = _BoundedTreeBuilder(source).parse(text)
    if root.tag != "nvidia_smi_log":
        raise BackendUnavailableError(
            f"{source} is not nvidia-smi -q -x output (root element <{root.tag}>)"
        )
    driver = _text(root, "driver_version")
    cuda = _text(root, "cuda_version")
    statics: list[GpuInventory] = []
    readings: list[GpuTelemetry] = []
    for position, gpu in enumerate(root.findall("gpu")):
        static = _static(gpu, position, driver, cuda, source)
        statics.append(static)
        readings.append(_telemetry(gpu, static.uuid))
    return statics, readings


def _too_large(source: str) -> BackendUnavailableError:
    """The refusal of a document over :data:`MAX_DOCUMENT_BYTES`, the same for every reader."""
    return BackendUnavailableError(
        f"{source} is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB"
        " (nvidia-smi -q -x prints well under 1 MiB); not parsing it"
    )


def _decoded(output: bytes) -> str:
    """A document's bytes as text; undecodable bytes are replaced, not fatal."""
    return output.decode("utf-8", errors="replace")


def read_nvidia_smi_capture(path: Path) -> str:
    """A saved capture's text, reading no more than :data:`MAX_DOCUMENT_BYTES` of it.

    Shared with the replay backend. Reading one byte past the bound tells a file that is
    too large (or a device such as ``/dev/zero``) from one exactly at it.
    """
    try:
        with path.open("rb") as capture:
            content = capture.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise BackendUnavailableError(
            f"cannot read the nvidia-smi capture {path}: {error.strerror or error}"
        ) from None
    if len(content) > MAX_DOCUMENT_BYTES:
        raise _too_large(str(path))
    return _decoded(content)


def _first_line(output: bytes) -> str:
    """The first non-blank line of a command's output, shortened for a log line."""
    for line in output.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            return line.strip()[:_DETAIL_CHARS]
    return ""


class NvidiaSmiBackend:
    """GPU readings from ``nvidia-smi -q -x``, run live or read from a saved capture.

    Live, every call runs the command again (list argv, no shell), so telemetry is current;
    it costs a process start, which is why NVML is preferred where it loads. With
    ``xml_path`` every call re-reads that file, so support staff see exactly what the
    agent would report from a customer's capture.
    """

    name = "nvidia-smi"

    def __init__(
        self,
        xml_path: str | Path | None = None,
        command: Sequence[str] = ("nvidia-smi", "-q", "-x"),
        timeout: float = 10.0,
    ) -> None:
        if not command:
            raise ValueError("command must name the program to run")
        self._xml_path = None if xml_path is None else Path(xml_path)
        self._command = tuple(command)
        self._timeout = timeout
        self._checked: list[GpuInventory] | None = None

    def check(self) -> None:
        """Read once to show the command works (``BackendUnavailableError`` if not).

        The reading is kept for the next ``static()``: choosing this backend and the
        agent's start-up read then cost one run of nvidia-smi, not two.
        """
        self._checked = self._read()[0]

    def static(self) -> list[GpuInventory]:
        """Every GPU's static facts, read now (or the reading ``check`` just took)."""
        checked, self._checked = self._checked, None
        return checked if checked is not None else self._read()[0]

    def telemetry(self) -> list[GpuTelemetry]:
        """Every GPU's readings, from a fresh run of the command (or the capture)."""
        return self._read()[1]

    def close(self) -> None:
        """Nothing to release: each read is a new process or a new file read."""

    def _read(self) -> tuple[list[GpuInventory], list[GpuTelemetry]]:
        """Fetch the document and parse it."""
        if self._xml_path is not None:
            return parse_nvidia_smi_xml(
                read_nvidia_smi_capture(self._xml_path), source=str(self._xml_path)
            )
        return parse_nvidia_smi_xml(self._run_command(), source=shlex.join(self._command))

    def _run_command(self) -> str:
        """Run the command and return its output, or say in one line why it failed."""
        shown = shlex.join(self._command)
        try:
            # The argv is the operator's configuration, run without a shell.
            process = subprocess.Popen(  # noqa: S603
                self._command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise BackendUnavailableError(
                f"{self._command[0]} not found: nvidia-smi is not installed or not on PATH"
            ) from None
        except OSError as error:
            raise BackendUnavailableError(
                f"cannot run {shown}: {error.strerror or error}"
            ) from None
        with process:
            try:
                stdout, stderr = self._bounded_output(process, shown)
            finally:
                # Refused (too slow, too much output): stop it before Popen's exit waits.
                if process.poll() is None:
                    process.kill()
        if process.returncode != 0:
            # nvidia-smi prints its own failures ("couldn't communicate with the NVIDIA
            # driver") on stdout, other programs on stderr: quote whichever has text.
            detail = _first_line(stderr) or _first_line(stdout)
            raise BackendUnavailableError(
                f"{shown} exited with status {process.returncode}: {detail or 'no output'}"
            )
        return _decoded(stdout)

    def _bounded_output(self, process: subprocess.Popen[bytes], shown: str) -> tuple[bytes, bytes]:
        """The process's stdout and stderr once it has exited, within both bounds.

        What ``subprocess.run`` does, except that it stops reading (and the caller kills
        the process) once the two streams together pass :data:`MAX_DOCUMENT_BYTES`, rather
        than holding whatever the program prints. POSIX only, as the agent is: it waits on
        both pipes at once, so neither can fill while the other is read.
        """
        deadline = time.monotonic() + self._timeout
        timed_out = BackendUnavailableError(
            f"{shown} timed out after {self._timeout:g} s (driver or GPU not responding)"
        )
        assert process.stdout is not None  # both are pipes: Popen was given PIPE
        assert process.stderr is not None
        stdout, stderr = process.stdout.fileno(), process.stderr.fileno()
        output = {stdout: bytearray(), stderr: bytearray()}
        with selectors.DefaultSelector() as selector:
            for descriptor in output:
                selector.register(descriptor, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                ready = selector.select(remaining) if remaining > 0 else []
                if not ready:
                    raise timed_out
                for key, _ in ready:
                    chunk = os.read(key.fd, _CHUNK_SIZE)
                    if not chunk:
                        selector.unregister(key.fd)
                    output[key.fd] += chunk
                if sum(map(len, output.values())) > MAX_DOCUMENT_BYTES:
                    raise _too_large(shown)
        try:
            # Both pipes closed; the exit follows at once, unless the program detached.
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            raise timed_out from None
        return bytes(output[stdout]), bytes(output[stderr])
