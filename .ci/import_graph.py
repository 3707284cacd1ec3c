#!/usr/bin/env python3
"""File-level import graph of one Rust crate directory; exits 1 on a cycle.

Edges: `use crate::a::..`, `crate::a::` paths, `super::..` (resolved to the
parent module's file, or a sibling's when the next segment is a module), and
a parent naming its own child module (`net::Ctx` in load/mod.rs).  A
`super::` inside an inline `mod tests { }` refers to the file itself and is
not an edge.  `natter::` (the library, seen from the binary) points at lib.rs.
"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "client/src"
files = {}  # module path tuple -> file (relative)
for dirpath, _, names in os.walk(root):
    for n in names:
        if not n.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, n), root)
        parts = rel[:-3].split(os.sep)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        # lib.rs and main.rs are two crate roots: key them apart
        key = tuple(parts) if rel not in ("lib.rs", "main.rs") else (rel,)
        files[key] = rel

def mods_declared(rel):
    text = open(os.path.join(root, rel)).read()
    return set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M))

LIB_MODS = mods_declared("lib.rs") if os.path.exists(os.path.join(root, "lib.rs")) else set()

def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if rel in ("lib.rs", "main.rs"):
        return ()
    return tuple(parts)

def file_for(crate, mod):
    if mod == ():
        return "lib.rs" if crate == "lib" else "main.rs"
    return files.get(mod)

TOKENS = re.compile(
    r'(//[^\n]*|/\*(?:.|\n)*?\*/)'          # comments, doc comments too
    r'|(\br(#*)"(?:.|\n)*?"\3)'              # raw strings
    r'|("(?:\\.|[^"\\])*")'                  # strings
    r"|('(?:\\.|[^'\\])')")                  # char literals (not lifetimes)

def strip(text):
    """The code without comments, strings and chars, in one left-to-right pass."""
    return TOKENS.sub(lambda m: '""' if m.group(2) or m.group(4) else " ", text)

def resolve(crate, base, segs):
    """The file that segs (after crate:: / super::) names, from module base."""
    mod = base
    for s in segs:
        if file_for(crate, mod + (s,)):
            mod = mod + (s,)
        else:
            break
    return file_for(crate, mod)

edges = {}
for key, rel in sorted(files.items(), key=lambda kv: kv[1]):
    crate = "lib" if rel == "lib.rs" or (rel != "main.rs" and rel[:-3].split(os.sep)[0] in LIB_MODS) else "bin"
    me = module_of(rel)
    text = strip(open(os.path.join(root, rel)).read())
    out = set()
    # inline module spans: super:: inside them means this file
    inline = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inline.append((m.start(), i))
    def in_inline(pos):
        return any(a <= pos < b for a, b in inline)
    children = mods_declared(rel)
    # expand `use x::{a, b::c}` groups one level into paths
    for m in re.finditer(r"\b(crate|super|natter)((?:::\w+)*)::(\{[^;]*?\}|\w+|\*)", text):
        head, mid, tail = m.group(1), m.group(2), m.group(3)
        segs = [s for s in mid.split("::") if s]
        tails = [t.strip() for t in tail.strip("{}").split(",")] if tail.startswith("{") else [tail]
        for t in tails:
            first = t.split("::")[0].strip()
            path = segs + ([first] if first and first not in ("self", "*") else [])
            if head == "natter":
                target = "lib.rs" if crate == "bin" else None
            elif head == "crate":
                target = resolve(crate, (), path)
            else:
                base = me if in_inline(m.start()) else me[:-1]
                if in_inline(m.start()) and not path:
                    continue  # `use super::*` in mod tests: this file
                target = resolve(crate, base, path)
            if target and target != rel:
                out.add(target)
    # a parent naming its own child module: `net::Ctx`, `fanout::run`
    for c in children:
        if re.search(r"(?<![:\w])" + c + r"::", text):
            t = file_for(crate, me + (c,))
            if t:
                out.add(t)
    edges[rel] = out

for rel in sorted(edges):
    print(f"{rel} -> {', '.join(sorted(edges[rel])) or '-'}")

# cycles: Tarjan's strongly connected components
index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1:
            comps.append(sorted(comp))
for v in sorted(edges):
    if v not in index:
        visit(v)
if comps:
    for c in comps:
        print("CYCLE:", " <-> ".join(c))
    sys.exit(1)
print(f"acyclic: {len(edges)} files, {sum(map(len, edges.values()))} edges")
