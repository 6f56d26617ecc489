#!/usr/bin/env python3
"""Generates master/src/api/protobuf_schema.txt, the message table that
master/src/api/protobuf.rs decodes Kubernetes protobuf bodies with.

The field numbers and wire types come from the prost messages of the `k8s-pb` crate
(generated from the `generated.proto` files of k8s.io/api and k8s.io/apimachinery); the
JSON name of each field and whether it is required come from `k8s-openapi` (the types our
handlers deserialize into). Both crates must be in the cargo registry
(`cargo fetch` in the workspace brings them: k8s-pb is a dev-dependency of skiff-master).

Usage: scripts/gen-proto-schema.py > master/src/api/protobuf_schema.txt

Output, one line each:
  M <package> <Message>                       a message (package like api.core.v1)
  F <tag> <jsonName> <o|r|m> <type> [R]       a field: optional, repeated or map
      <type> is a scalar (string bool int32 int64 double bytes), a message
      <package>.<Message>, or for maps string,<value type>; R marks a field that
      k8s-openapi requires (its zero value is kept in JSON).
"""
import glob
import os
import re
import sys

REG = os.path.expanduser("~/.cargo/registry/src")


def find_crate(name):
    hits = sorted(glob.glob(os.path.join(REG, "*", name)))
    if not hits:
        sys.exit(f"{name} is not in {REG}: run cargo fetch")
    return hits[-1]


PB = find_crate("k8s-pb-0.9.0")
OA = os.path.join(find_crate("k8s-openapi-0.29.0"), "src", "v1_37")  # the newest: k8s-pb 0.9 has fields 1.33 lacks

# Top-level module trees of k8s-pb that hold messages we may be sent.
PB_ROOTS = ["api", "apimachinery", "apiextensions_apiserver", "kube_aggregator", "metrics"]


def norm(rust_name):
    """prost and k8s-openapi split acronyms differently (non_resource_ur_ls, non_resource_urls)."""
    return rust_name.replace("_", "").lower()


def lower_camel(snake):
    parts = snake.strip("_").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# --- k8s-openapi: JSON names and required fields per struct -------------------------
openapi = {}  # (module path, lower struct name) -> {rust field: (json, required)}
global_names = {}  # rust field -> json name, for structs k8s-openapi lacks
for path in glob.glob(os.path.join(OA, "**", "*.rs"), recursive=True):
    rel = os.path.relpath(os.path.dirname(path), OA).replace(os.sep, ".")
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r"\npub struct (\w+) \{\n(.*?)\n\}", text, re.S):
        sname, body = m.group(1), m.group(2)
        fields = {}
        for fm in re.finditer(r"^    pub (\w+): (.*),$", body, re.M):
            fields[fm.group(1)] = fm.group(2).startswith("Option<")
        keys = dict(
            (k, j) for j, k in re.findall(r'"(\w+)" => Field::Key_(\w+),', text)
        )
        entry = {}
        for f, optional in fields.items():
            json = keys.get(f)
            if json is None:
                continue
            entry[norm(f)] = (json, not optional)
            global_names.setdefault(f.rstrip("_"), json)
        openapi[(rel, sname.lower())] = entry

# --- k8s-pb: messages, tags and types ------------------------------------------------
SCALARS = {"string", "bool", "int32", "int64", "double", "bytes"}


def resolve(modpath, rust_type):
    """A Rust type path inside a k8s-pb module -> package.Message."""
    t = rust_type.strip()
    for wrap in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while t.startswith(wrap):
            t = t[len(wrap):-1].strip()
    segs = t.split("::")
    mod = list(modpath)
    while segs and segs[0] == "super":
        mod.pop()
        segs.pop(0)
    if len(segs) == 1:
        return ".".join(mod + segs)
    return ".".join(mod + segs) if segs[0] not in PB_ROOTS else ".".join(segs)


def prost_fields(body):
    """(attrs, tag, rust name, rust type) of each field of a prost struct body."""
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        am = re.match(r"\s*#\[prost\((.*)tag = \"(\d+)\"\)\]$", lines[i])
        i += 1
        if not am:
            continue
        decl = ""
        while i < len(lines):
            decl += lines[i].strip()
            i += 1
            if decl.endswith(",") and decl.count("<") == decl.count(">"):
                break
        fm = re.match(r"pub (?:r#)?(\w+):\s*(.*),$", decl)
        if not fm:
            sys.exit(f"cannot parse field {decl!r}")
        yield am.group(1), am.group(2), fm.group(1), fm.group(2)


# Served or servable packages: the GA versions of k8s.io/api, apimachinery, metrics.
PACKAGE = re.compile(r"^(api\.\w+\.v[12]|apimachinery\..*|metrics\.pkg\.apis\.metrics\.v1beta1)$")

messages = {}  # package.Message -> (openapi names, [(tag, rust name, json, card, type, required)])
for root in PB_ROOTS:
    for path in sorted(glob.glob(os.path.join(PB, "src", root, "**", "mod.rs"), recursive=True)):
        modpath = os.path.relpath(os.path.dirname(path), os.path.join(PB, "src")).split(os.sep)
        pkg = ".".join(modpath)
        if not PACKAGE.match(pkg):
            continue
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"::prost::Message\)\]\npub struct (\w+) \{\n(.*?)\n\}", text, re.S):
            sname, body = m.group(1), m.group(2)
            names = openapi.get((pkg, sname.lower()), {})
            fields = []
            for attrs, tag, fname, ftype in prost_fields(body):
                json, required = names.get(norm(fname), (global_names.get(fname, lower_camel(fname)), False))
                kind = attrs.split(",")[0].strip()
                if kind.startswith("btree_map"):
                    k, v = re.search(r'btree_map = "(\w+), (\w+)"', attrs).groups()
                    if v == "message":
                        inner = re.search(r"BTreeMap<[^,]+,\s*(.*?),?>$", ftype).group(1)
                        v = resolve(modpath, inner)
                    card, typ = "m", f"{k},{v}"
                else:
                    card = "r" if "repeated" in attrs else "o"
                    if kind == "message":
                        typ = resolve(modpath, ftype)
                    elif kind.startswith("bytes"):
                        typ = "bytes"
                    elif kind in SCALARS:
                        typ = kind
                    else:
                        sys.exit(f"unknown prost kind {attrs!r} in {pkg}.{sname}.{fname}")
                fields.append((tag, fname, json, card, typ, required))
            messages[f"{pkg}.{sname}"] = (names, fields)

out = []
for full, (names, fields) in messages.items():
    pkg, sname = full.rsplit(".", 1)
    out.append(f"M {pkg} {sname}")
    for tag, fname, json, card, typ, required in fields:
        # A Go struct embedded inline: a message field k8s-openapi's struct lacks, whose own
        # fields k8s-openapi's struct has.
        inline = False
        if names and norm(fname) not in names and typ in messages:
            inner = [norm(f[1]) for f in messages[typ][1]]
            inline = all(n in names for n in inner)
            print(f"{'inline' if inline else 'unknown to k8s-openapi'}: {full}.{fname}", file=sys.stderr)
        out.append(f"F {tag} {json} {card} {typ}" + (" R" if required else "") + (" I" if inline else ""))

sys.stdout.write("\n".join(out) + "\n")
