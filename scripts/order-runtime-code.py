#!/usr/bin/env python3
"""The analysis half of scripts/order-runtime-code.sh (which sets up the loop mount and runs
the workload between the steps below).

  order-runtime-code.py candidates COPY BINARY STATE    functions on the pages in the cache
  order-runtime-code.py probe      COPY BINARY STATE    one uprobe at each candidate's entry
  order-runtime-code.py unprobe    COPY STATE           their hit counts; remove them
  order-runtime-code.py write      STATE OUT BINARY     the functions to order, into OUT

COPY is the binary's copy on the loop mount (the file the workload runs), BINARY the same
binary elsewhere (its symbol table is read), STATE a work directory. Without uprobes
(`probe` fails: no tracefs or no CONFIG_UPROBE_EVENTS) `write` lists every candidate; with
them, only the candidates whose entry was hit.
"""

import ctypes
import json
import mmap
import os
import subprocess
import sys

TRACEFS = "/sys/kernel/tracing"
GROUP = "skiff_order"


def cached_pages(path):
    """Indices of the file's 4 KiB pages that are in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        sys.exit("mmap: " + os.strerror(ctypes.get_errno()))
    pages = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
        sys.exit("mincore: " + os.strerror(ctypes.get_errno()))
    os.close(fd)
    return {i for i in range(pages) if vec[i] & 1}


def text_section(binary):
    """(address, file offset, size) of `.text`."""
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        f = line.replace("[ ", "[").split()
        if len(f) > 5 and f[1] == ".text":
            return int(f[3], 16), int(f[4], 16), int(f[5], 16)
    sys.exit("no .text section in " + binary)


def functions(binary):
    """(address, size, name) of every function symbol, in address order."""
    out = subprocess.run(["nm", "--defined-only", "-S", binary], capture_output=True,
                         text=True, check=True).stdout
    funcs = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW":
            funcs.append((int(f[0], 16), int(f[1], 16), f[3]))
    funcs.sort()
    return funcs


def candidates(copy, binary, state):
    t_addr, t_off, t_size = text_section(binary)
    touched = set()
    for p in cached_pages(copy):
        lo, hi = p * 4096, p * 4096 + 4096
        if lo < t_off + t_size and hi > t_off:
            touched.add((max(lo, t_off) - t_off + t_addr) // 4096)
    found, seen = [], set()
    for addr, size, name in functions(binary):
        first, last = addr // 4096, (addr + max(size, 1) - 1) // 4096
        if name not in seen and any(p in touched for p in range(first, last + 1)):
            seen.add(name)
            found.append({"name": name, "offset": addr - t_addr + t_off})
    with open(os.path.join(state, "candidates.json"), "w") as f:
        json.dump(found, f)
    print(f"{len(found)} candidate functions on {len(touched)} touched pages of .text "
          f"({len(touched) * 4} KiB of {t_size // 1024} KiB)")


def probe_safe(name):
    """Whether a uprobe may go at the function's entry. Not on the C library's string and
    memory functions (its SSE/AVX/EVEX variants, in the static `skiff`): stepped out of line
    by uprobes, they corrupted thread creation here (Linux 6.18: "fatal runtime error:
    current thread handle already set during thread spawn"). They stay candidates, listed
    unprobed."""
    return name.startswith("_R") or name.startswith("_ZN") or not any(
        k in name for k in ("_sse", "_ssse", "_avx", "_evex", "_erms"))


def probe(copy, state):
    with open(os.path.join(state, "candidates.json")) as f:
        found = json.load(f)
    placed = 0
    # one write per probe: a probe the kernel refuses (an instruction uprobes cannot
    # step) is only that function left unprobed, kept as a candidate
    events = os.open(os.path.join(TRACEFS, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
    for i, c in enumerate(found):
        if not probe_safe(c["name"]):
            continue
        try:
            os.write(events, f"p:{GROUP}/f{i} {copy}:{c['offset']:#x}\n".encode())
            placed += 1
        except OSError:
            pass
    os.close(events)
    with open(os.path.join(TRACEFS, "events", GROUP, "enable"), "w") as f:
        f.write("1\n")
    print(f"{placed} of {len(found)} candidates probed")


def unprobe(copy, state):
    """Saves the hit count of every probe placed (hits.json) and removes the probes; what
    was placed is read back from the kernel, so an interrupted `probe` is cleaned up too."""
    enable = os.path.join(TRACEFS, "events", GROUP, "enable")
    if not os.path.exists(enable):
        return
    with open(enable, "w") as f:
        f.write("0\n")
    # uprobe_profile: file, event (without its group), hits
    hits = {}
    with open(os.path.join(TRACEFS, "uprobe_profile")) as f:
        for line in f:
            p = line.split()
            if len(p) == 3 and p[0] == copy and p[1].startswith("f"):
                hits[int(p[1][1:])] = int(p[2])
    with open(os.path.join(state, "hits.json"), "w") as f:
        json.dump(hits, f)
    events_path = os.path.join(TRACEFS, "uprobe_events")
    with open(events_path) as f:
        others = [line for line in f if not line.startswith(f"p:{GROUP}/")]
    if not others:
        # only ours: clear them all at once (one by one takes ~20 ms each)
        os.close(os.open(events_path, os.O_WRONLY | os.O_TRUNC))
        return
    events = os.open(events_path, os.O_WRONLY | os.O_APPEND)
    for i in hits:
        os.write(events, f"-:{GROUP}/f{i}\n".encode())
    os.close(events)


def write(state, out, binary):
    with open(os.path.join(state, "candidates.json")) as f:
        found = json.load(f)
    # A round on a binary already laid out by OUT misses functions that do run (2026-12-04:
    # 122 of 1,328, String::write_str among them, called 152 times by one `run`; the cause
    # is not found yet). So the names of the previous list that the binary still has are
    # kept, in front: a list only loses what the code no longer contains.
    previous = []
    if os.path.exists(out):
        with open(out) as f:
            previous = f.read().split()
    present = {name for _, _, name in functions(binary)}
    hits = {}  # probe index -> hits; probes the kernel refused are not in it
    if os.path.exists(os.path.join(state, "hits.json")):
        with open(os.path.join(state, "hits.json")) as f:
            hits = {int(k): v for k, v in json.load(f).items()}
    seen = set()
    names = []
    kept = [n for n in previous if n in present]
    for name in kept + [c["name"] for i, c in enumerate(found) if hits.get(i, 1) > 0]:
        if name not in seen:
            seen.add(name)
            names.append(name)
    with open(out, "w") as f:
        f.write("\n".join(names) + "\n")
    how = f"{len(hits)} probed, {sum(1 for v in hits.values() if v)} of them run" \
        if hits else "no uprobes: every candidate"
    print(f"{out}: {len(names)} functions: {len(kept)} of the previous list, the rest of "
          f"{len(found)} candidates ({how})")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "candidates":
        candidates(*args)
    elif cmd == "probe":
        probe(args[0], args[2])
    elif cmd == "unprobe":
        unprobe(*args)
    elif cmd == "write":
        write(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
